"""Taking a running node over from another CNI without a drain: its state in, as cloud-cni's own.

``awsvpc``: aws-vpc-cni (aws-node). Pure: values in, values out, one file reader; the daemon decides
when to call it (docs/adoption-aws-vpc-cni.md).
"""

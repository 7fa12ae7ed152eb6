"""The cloud-cni CNI plugin: exec'd by the container runtime once per CNI call.

It imports nothing heavy (no grpc, no protobuf, no ipamd): its start-up is paid per pod.
"""

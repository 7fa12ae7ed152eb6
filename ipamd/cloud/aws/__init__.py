"""The AWS provider: ENIs, secondary IPs and /28 prefixes through boto3, node facts through IMDSv2."""

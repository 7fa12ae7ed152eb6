"""Generated from proto/ipamd.proto by proto/generate.py: do not edit."""

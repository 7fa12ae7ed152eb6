"""Pod network wiring. The only package that touches netlink or HNS (DATAPATH=linux|windows)."""

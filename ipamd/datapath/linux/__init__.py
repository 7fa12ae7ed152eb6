"""DATAPATH=linux: routed /32 pod networking with pyroute2 (veth, routes, policy rules) and SNAT."""

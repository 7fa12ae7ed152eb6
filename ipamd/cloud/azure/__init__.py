"""The azure provider: NIC ipConfigurations through azure-mgmt-network / azure-mgmt-compute."""

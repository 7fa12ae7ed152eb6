"""Fixtures shared across test packages: the local fakes of the clouds (loopback only) and the
containerd harness."""

pytest_plugins = [
    "tests.fakes.moto_ec2",
    "tests.fakes.imds",
    "tests.fakes.azure_arm",
    "tests.fakes.containerd",
    "tests.fakes.kube_apiserver",
]

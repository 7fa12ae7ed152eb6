"""The cloud-cni container image, built without a container registry (``./dev image``).

One layer, from Debian bookworm packages and PyPI wheels, written as an OCI archive that
``ctr images import`` and ``docker load`` accept. Same inputs, same digest. docs/deploy.md ("The
image") says what is in it and why.

    debian.py   the Debian part: packages (mmdebstrap), the files kept of them, the interpreter
    python.py   the Python part: the wheel lock, the install into the root, bytecode, pruning
    checks.py   what must hold before the root becomes a layer (every ELF's libraries, the commands)
    oci.py      the deterministic layer, the OCI image layout and the archive
    build.py    the command: ``python -m image.build``
"""

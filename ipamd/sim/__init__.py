"""Cluster-scale simulation of the warm pool: the daemon's own pool code on thousands of simulated nodes.

Every warm-pool setting trades idle addresses against pods that wait for the cloud, and the cloud's
API budget is shared by every node of an account: a question no single node can answer. This package
answers it by running ``ipamd.pool`` (the datastore and ``policy.plan``, never a copy) on N simulated
nodes against a simulated cloud (account-wide token buckets, latencies, subnets), in simulated time.

Modules, from the bottom up (``docs/simulation.md`` has the model and the workload schema):

    engine     the event queue: a heap of timestamped callbacks merged with a lazy workload stream
    subnet     a subnet's address space: secondary IPs and /28 prefixes, reserved addresses, peaks
    cloud      the cloud's side: account buckets per action class, API calls per action, latencies
    settings   a policy (env-style settings, parsed by the daemon's own ``Settings.from_env``)
    targets    the per-node pool targets hook (static now; ``POOL_MODE=adaptive`` plugs in here)
    node       one node: the manager's loop and the ADD path, event-driven, on a real ``Datastore``
    cluster    nodes, pods and the scheduler; runs a workload to the end and records metrics
    workload   the workload file schema (YAML or JSON) and the shipped workloads
    sources    lazy event generators for each workload source, and CSV replay
    metrics    what one run measured, as plain values
    report     the table, the JSON document and the plots
    planner    capacity planning: the subnet a peak needs
    cli        ``cloud-cni simulate`` and ``cloud-cni plan``

Importing this package is cheap: ``ipamd.cli`` imports ``ipamd.sim.cli`` only to add its parsers.
"""

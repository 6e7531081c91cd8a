"""`caslab advise SCENARIO --driver D[,D2...]`: the best persistence config for a population and a
balancer, found by runs on the lab, with the evidence (DESIGN.md section 14).

    candidates.py  per group of services: what the driver can do and the clients can carry
    search.py      successive halving per group (the others at their baseline), then a full-length run
    judge.py       what a run says of its candidate: the figure that rejects it, or its score
    runner.py      runs on the lab, in child processes on their own loopback nets (worker.py)
    output.py      the winning config's files, advice.json, advice.html
    command.py     the command: drivers one after another within one wall-time budget, exit code
"""

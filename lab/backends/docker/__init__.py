"""The docker backend: the farm, the balancer and the load generator as containers on a network of the
lab's own (DESIGN.md sections 6 and 11), driven through the Docker SDK for Python. The load generator
is one container, or with `--workers N` N containers, each a Locust worker with its share of the users,
whose master runs in the lab's process on the gateway.

    lab network: a free /22 of 10.221.0.0/16 per lab (larger for many clients); internal, nothing leaves it
      .1    this host (the bridge): the lab talks to every container directly, nothing is published;
            the Locust master of --workers N listens here, on a port picked free for the run
      .2    the balancer, on the VIP (vip-per-service: .3-.9 as well, added to its interface)
      .11…  CAS01… (ports as locally: HTTP 8080, HTTPS 8443, MAPI 59531, Address Book 59532, admin 8099)
      .250  the load generator (--workers N: .250, .249, … one per container); the clients' addresses are
            in the /24s after the first (SubnetAddresses), each on the container that runs its users

One idea per module:
- `network`: LabNetwork, the addresses of one lab, and picking a free subnet for it;
- `engine`: the connection to the engine, the labels every lab thing carries, LabContainers (make the
  network and containers of one run, remove them all);
- `images`: the images this checkout's sources need (compose/build-images), by their content tag;
- `host`: the one host setting a lab may need (the kernel's neighbour table);
- `balancer`: ContainerBalancer, a driver's balancer run in its image;
- `workers`: LoadgenContainers, the N loadgen containers of --workers N as loadgen.distributed's Workers;
- `lab`: DockerLab, the backend itself (lab.backends.Lab);
- `janitor`: the labs on the engine whose owner is gone, found by their labels, and their removal.
"""

from lab.backends.docker.engine import RUN_DIR_LABEL, RUN_LABEL, DockerLabError
from lab.backends.docker.images import BUILD_IMAGES
from lab.backends.docker.lab import DockerLab, json_lines
from lab.backends.docker.network import LabNetwork

__all__ = [
    "BUILD_IMAGES",
    "RUN_DIR_LABEL",
    "RUN_LABEL",
    "DockerLab",
    "DockerLabError",
    "LabNetwork",
    "json_lines",
]

"""One mock CAS: its keys, users, ledger, fault switches and services (state only; no sockets here)."""

from __future__ import annotations

import hashlib
import secrets
import time

from mockcas.config import CasConfig
from mockcas.ledger import Ledger
from mockcas.sealing import Sealer
from mockcas.services import HTTP_SERVICES, TCP_SERVICES, HttpService, TcpService
from mockcas.users import Users
from mockcas.w3c import W3cLog

# Health switch values: 'down' fails the balancer's probe with 503 while the services keep answering
# (a soft failure); 'drain' answers the probe 404, which HAProxy's `http-check disable-on-404` reads as
# "no new sessions, keep the persistent ones" and other balancers read as down.
HEALTH_STATES = ("up", "down", "drain")


class Cas:
    def __init__(self, config: CasConfig) -> None:
        self.config = config
        self.name = config.name
        seed = config.key_seed
        server_key = (
            hashlib.sha256(f"{seed}:{config.name}".encode()).digest() if seed else secrets.token_bytes(32)
        )
        self.server_sealer = Sealer(server_key)  # state only this CAS accepts
        self.farm_sealer = Sealer(config.farm_key)  # state in the mailbox: any CAS accepts it
        self.users = Users(config.users, config.password, config.domain)
        self.ledger = Ledger(config.name)
        self.w3c = W3cLog(config.w3c_log_dir) if config.w3c_log_dir else None  # its IIS log, if asked
        self.health = "up"
        self.started = time.time()
        self.inflight = 0
        self.peak_inflight = 0
        # When its event loop fell behind by more than LOOP_LAG_S (epoch seconds, by how much): a CAS
        # that falls behind answers late, which a balancer's timer may take for silence (CasServer
        # watches it; the lab reads it from /caslab/stats).
        self.loop_lags: list[tuple[float, float]] = []
        self.http_services: dict[str, HttpService] = {sid: cls(self) for sid, cls in HTTP_SERVICES.items()}
        self.tcp_services: dict[str, TcpService] = {sid: cls(self) for sid, cls in TCP_SERVICES.items()}

    def scaled(self, seconds: float) -> float:
        return self.config.scaled(seconds)

    def set_health(self, value: str) -> None:
        if value not in HEALTH_STATES:
            raise ValueError(f"health must be one of {', '.join(HEALTH_STATES)}")
        self.health = value

    def stats(self) -> dict:
        by_service: dict[str, dict[str, int]] = {}
        for (service, state), n in sorted(self.ledger.counts.items()):
            by_service.setdefault(service, {})[state] = n
        return {
            "server": self.name,
            "run": self.config.run_id,
            "health": self.health,
            "uptime_s": round(time.time() - self.started, 3),
            "requests": len(self.ledger),
            "inflight": self.inflight,
            "peak_inflight": self.peak_inflight,
            "loop_lags": [[round(ts, 3), round(lag, 3)] for ts, lag in self.loop_lags],
            "services": by_service,
            # The clock it runs, so a lab can check its CAS keep the scenario's time (compose/lab.yml).
            "time_scale": self.config.time_scale,
            "exchange": {
                "rpc_min_connection_timeout_s": self.config.rpc_min_connection_timeout_s,
                "eas_heartbeat_min_s": self.config.eas_heartbeat_min_s,
                "eas_heartbeat_max_s": self.config.eas_heartbeat_max_s,
                "owa_timeout_s": self.config.owa_timeout_s,
                "tcp_keepalive_s": self.config.tcp_keepalive_s,
            },
        }

    async def close(self) -> None:
        for service in [*self.http_services.values(), *self.tcp_services.values()]:
            await service.close()
        if self.w3c is not None:
            self.w3c.flush()  # the lab reads the IIS log after it closed the CAS's open requests

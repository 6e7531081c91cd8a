"""What every Outlook kind does over HTTP besides its mailbox connection: Autodiscover first, free/busy
through EWS now and then, and the Offline Address Book download (manifest, then files in ranges as BITS
fetches them). Mixed into the Outlook kinds; not a kind itself.
"""

from __future__ import annotations

import datetime as dt

from loadgen.base import CasUser, Response
from loadgen.wire import autodiscover, ews, oab

# What Outlook names itself on its HTTP calls (Autodiscover, EWS, the OAB manifest); its RPC/HTTP
# channels say MSRPC (loadgen.wire.rpchttp) and the OAB files are fetched by BITS (loadgen.wire.oab).
OUTLOOK_2010_USER_AGENT = "Microsoft Office/14.0 (Windows NT 6.1; Microsoft Outlook 14.0.7113; Pro)"
OUTLOOK_2007_USER_AGENT = "Microsoft Office/12.0 (Windows NT 6.1; Microsoft Office Outlook 12.0.6662; Pro)"


class OutlookHttp(CasUser):
    abstract = True
    oab_url = ""
    oab_files: list[oab.OabFile]

    def autodiscover(self) -> None:
        """POX Autodiscover; Outlook takes its OAB URL from the answer (the rest points at the VIP)."""
        answers: list[autodiscover.AutodiscoverAnswer | None] = []

        def classify(r: Response) -> tuple[str, str]:
            answers.append(autodiscover.parse(r.content))
            return autodiscover.classify(r.status_code, r.content)

        self.call(
            "POST",
            "autodiscover",
            autodiscover.PATH,
            data=autodiscover.outlook_request(self.username),
            headers=autodiscover.HEADERS,
            auth=(self.username, self.password),
            classify=classify,
        )
        answer = answers[0] if answers else None
        self.oab_url = answer.oab_url if answer else ""
        self.oab_files = []

    def free_busy(self) -> None:
        """A meeting planner's free/busy look-up (stateless EWS: needs no affinity)."""
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        others = [f"user{self.rng.randint(1, 50)}@{self.plan.domain}" for _ in range(2)]
        body = ews.get_user_availability(others, now, now + dt.timedelta(days=1))
        self.call(
            "POST",
            "ews",
            ews.PATH,
            name="ews GetUserAvailability",
            data=body,
            headers=ews.HEADERS,
            auth=(self.username, self.password),
            classify=lambda r: ews.classify(r.status_code, r.content),
        )

    def download_oab(self) -> None:
        """Fetch the manifest (once), then one whole file in ranges; a file stitched from two differing
        copies fails its SHA-1, which the event log records as foreign."""
        if not self.oab_url:
            return
        if not self.oab_files:
            files: list[oab.OabFile] = []

            def read_manifest(r: Response) -> tuple[str, str]:
                files.extend(oab.parse_manifest(r.content) or [])
                return oab.classify(r.status_code)

            self.call(
                "GET",
                "oab",
                oab.manifest_path(self.oab_url),
                name="oab manifest",
                auth=(self.username, self.password),
                classify=read_manifest,
            )
            self.oab_files = files
            return
        download = oab.Download(self.rng.choice(self.oab_files))
        base = oab.oab_path(self.oab_url)
        while not download.done:
            response = self.call(
                "GET",
                "oab",
                base + download.file.name,
                name="oab file range",
                headers={**download.next_headers(), "User-Agent": oab.BITS_USER_AGENT},
                auth=(self.username, self.password),
                classify=lambda r: download.take(r.status_code, r.headers, r.content),
            )
            if response.status_code not in (200, 206):
                return
        if not download.verified():
            ctx = self.new_context("oab")
            ctx.request_id = ""  # a client-side check: no request, so no ledger row to match
            self.report(
                ctx,
                name="oab verify",
                started=0,
                server="",
                status=0,
                outcome="foreign",
                detail="SHA-1 mismatch: ranges came from different OAB copies",
            )

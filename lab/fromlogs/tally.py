"""The small counters a day of logs comes down to, built batch by batch so no log is held in memory.

Every string a batch carries (addresses, users, User-Agents, paths, device ids) is turned into a dense
integer id by an `Interner`, once per distinct value in a batch (pyarrow's dictionary encoding and
`index_in` do the per-line work in C++). Two tables grow from the ids:

- `activity`: requests grouped by (peer, client address, user, User-Agent, device, service, time
  bucket), with their count and first and last time. The client address is the logged
  X-Forwarded-For when there is one, else the peer. A bucket is one hour of Exchange time (an hour of
  the logs' clock divided by `time_scale`, for logs a caslab run wrote faster than real time).
- `runs`: for every ActiveSync device, the stretches of requests it made from one address in a row,
  which is what tells how often a phone changes address.

Both are compacted (grouped again, merged) whenever they grow past a bound, so memory follows the
number of distinct clients, not of lines. User names and device ids live only in the interners, in
memory: what comes out are counts and ids.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lab.fromlogs.batch import FileNotes
from lab.fromlogs.classify import (
    AGENT_FAMILIES,
    DEVICE_ID_PATTERN,
    DEVICE_TYPE_PATTERN,
    EAS_USER_PATTERN,
    SERVICES,
    agent_family,
    first_address,
    person_keys,
    service_of,
    user_key,
)

KEYS = ["peer", "client", "user", "agent", "device", "service", "bucket"]
# The parts are grouped again when they hold this many rows more than the last compaction left (at
# least COMPACT_ROWS): memory stays a few times the distinct groups, and compacting costs little.
COMPACT_ROWS = 500_000
COMPACT_RUNS = 500_000
EAS = SERVICES.index("eas")


class Interner:
    """Dense ids for strings, across batches: "" is always id 0. `derive` (optional) works out an integer
    from each new value once: a service from a path, a family from a User-Agent, or the id of the
    value's normal form in another interner (a user name in one spelling, an address)."""

    def __init__(self, derive: Callable[[str], int] | None = None) -> None:
        self.values: list[str] = []
        self._ids: dict[str, int] = {}
        self._known: pa.Array | None = None  # the values as an Arrow array, made again after a change
        self._derive = derive
        self._derived: list[int] = []
        self._derived_array: np.ndarray | None = None
        self.id_of("")

    def __len__(self) -> int:
        return len(self.values)

    def id_of(self, value: str) -> int:
        found = self._ids.get(value)
        if found is None:
            found = self._ids[value] = len(self.values)
            self.values.append(value)
            if self._derive:
                self._derived.append(self._derive(value))
            self._known = self._derived_array = None
        return found

    def codes(self, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """The id of every value of `column` (a string or dictionary array)."""
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        encoded = column if pa.types.is_dictionary(column.type) else column.dictionary_encode()
        dictionary = encoded.dictionary
        positions = pc.index_in(dictionary, value_set=self._known_values())
        if positions.null_count:
            for value in pc.filter(dictionary, pc.is_null(positions)).to_pylist():
                self.id_of(value)
            positions = pc.index_in(dictionary, value_set=self._known_values())
        # The known values are in id order, so a position among them is the id.
        ids = positions.to_numpy(zero_copy_only=False).astype(np.int32)
        return ids[encoded.indices.to_numpy(zero_copy_only=False)]

    def derived_codes(self, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """What `derive` made of every value of `column`."""
        ids = self.codes(column)
        if self._derived_array is None:
            self._derived_array = np.asarray(self._derived, np.int32)
        return self._derived_array[ids]

    def _known_values(self) -> pa.Array:
        if self._known is None:
            self._known = pa.array(self.values, pa.string())
        return self._known


@dataclass
class Observed:
    """What the logs came down to (see the module docstring); ids index the lookup lists."""

    activity: pd.DataFrame  # KEYS + requests, first, last
    runs: pd.DataFrame  # device, client, first, last, requests: one stretch per row, in time order
    addresses: list[str]
    agents: list[str]
    agent_families: list[str]  # per agent id
    device_types: list[str]  # per device id ("" for device 0, no device)
    users: int  # distinct users seen (id 0 is no user), however their names were spelled
    bucket_s: float  # seconds of the logs' clock in one Exchange hour
    time_scale: float
    files: list[FileNotes] = field(default_factory=list)
    tenants_note: str = ""  # how users of several tenants were told apart (classify.person_keys)


class Tally:
    """Counters fed batch by batch (`add`), read once at the end (`observed`)."""

    def __init__(self, time_scale: float = 1.0) -> None:
        self.time_scale = time_scale
        self.bucket_s = 3600.0 / time_scale
        self.addresses = Interner()  # client and peer addresses
        self.users = Interner()  # user names as logged, decoded (classify.user_key; persons: person_keys)
        self.devices = Interner()  # ActiveSync DeviceId values
        self.device_types = Interner()
        # Values as logged, each made sense of once (see Interner):
        self._peers = Interner(lambda v: self.addresses.id_of("" if v == "-" else v))
        self._forwarded = Interner(lambda v: self.addresses.id_of(first_address(v)))
        self._user_names = Interner(lambda v: self.users.id_of(user_key(v)))
        self.agents = Interner(lambda a: AGENT_FAMILIES.index(agent_family(a)))
        self._paths = Interner(lambda p: SERVICES.index(service_of(p)))
        self._device_type: dict[int, int] = {}  # device id -> type id, from its first line
        self._typed = np.zeros(0, bool)  # per device id: its type is known
        self._parts: list[pa.Table] = []
        self._part_rows = self._compacted_rows = 0
        self._runs: list[np.ndarray] = []  # arrays of shape (n, 5): device, client, first, last, requests
        self._run_rows = self._compacted_runs = 0

    def add(self, batch: pa.Table) -> None:
        ts = batch.column("ts").to_numpy()
        peer = self._peers.derived_codes(batch.column("peer"))
        forwarded = self._forwarded.derived_codes(batch.column("forwarded"))
        client = np.where(forwarded == 0, peer, forwarded)
        user = self._user_names.derived_codes(batch.column("user"))
        agent = self.agents.codes(batch.column("agent"))
        service = self._paths.derived_codes(batch.column("path"))
        device = np.zeros(len(ts), np.int32)
        eas = np.flatnonzero(service == EAS)
        if len(eas):
            self._devices(batch.column("query"), eas, device, user)
        bucket = np.floor_divide(ts, self.bucket_s).astype(np.int64)
        table = pa.table(
            {
                "peer": peer,
                "client": client,
                "user": user,
                "agent": agent,
                "device": device,
                "service": service,
                "bucket": bucket,
                "ts": ts,
            }
        )
        grouped = table.group_by(KEYS, use_threads=False).aggregate(
            [("ts", "count"), ("ts", "min"), ("ts", "max")]
        )
        self._parts.append(grouped.rename_columns([*KEYS, "requests", "first", "last"]))
        self._part_rows += grouped.num_rows
        if self._part_rows > self._compacted_rows + max(COMPACT_ROWS, self._compacted_rows):
            self._compact_activity()
        if len(eas):
            self._add_runs(device[eas], client[eas], ts[eas])

    def _devices(self, query: pa.ChunkedArray, eas: np.ndarray, device: np.ndarray, user: np.ndarray) -> None:
        """Device ids from ActiveSync queries; the type of each device once, from its first line here;
        the user from the query when the line named none (a balancer's log)."""
        queries = query.take(pa.array(eas))
        if isinstance(queries, pa.ChunkedArray):
            queries = queries.combine_chunks()
        if pa.types.is_dictionary(queries.type):
            queries = queries.cast(pa.string())

        def field(pattern: str, rows: pa.Array) -> pa.Array:
            return pc.fill_null(pc.struct_field(pc.extract_regex(rows, pattern), [0]), "")

        ids = self.devices.codes(field(DEVICE_ID_PATTERN, queries))
        device[eas] = ids
        if len(self._typed) < len(self.devices):
            self._typed = np.concatenate([self._typed, np.zeros(len(self.devices) - len(self._typed), bool)])
        seen, first = np.unique(ids, return_index=True)
        untyped = first[(seen > 0) & ~self._typed[seen]]
        if len(untyped):
            types = self.device_types.codes(field(DEVICE_TYPE_PATTERN, queries.take(pa.array(untyped))))
            self._device_type.update(zip(ids[untyped].tolist(), types.tolist(), strict=True))
            self._typed[ids[untyped]] = True
        unnamed = np.flatnonzero(user[eas] == 0)
        if len(unnamed):
            named = field(EAS_USER_PATTERN, queries.take(pa.array(unnamed)))
            user[eas[unnamed]] = self._user_names.derived_codes(named)

    def _add_runs(self, device: np.ndarray, client: np.ndarray, ts: np.ndarray) -> None:
        order = np.lexsort((ts, device))
        device, client, ts = device[order], client[order], ts[order]
        starts = np.flatnonzero(
            np.concatenate(([True], (device[1:] != device[:-1]) | (client[1:] != client[:-1])))
        )
        ends = np.append(starts[1:], len(ts)) - 1
        runs = np.column_stack(
            (device[starts], client[starts], ts[starts], ts[ends], ends - starts + 1)
        ).astype(np.int64)
        self._runs.append(runs)
        self._run_rows += len(runs)
        if self._run_rows > self._compacted_runs + max(COMPACT_RUNS, self._compacted_runs):
            self._compact_runs()

    def _compact_activity(self) -> None:
        if len(self._parts) <= 1:
            return
        merged = pa.concat_tables(self._parts).group_by(KEYS, use_threads=False)
        merged = merged.aggregate([("requests", "sum"), ("first", "min"), ("last", "max")])
        self._parts = [merged.rename_columns([*KEYS, "requests", "first", "last"])]
        self._part_rows = self._compacted_rows = merged.num_rows
        pa.default_memory_pool().release_unused()  # give back what the parts held

    def _compact_runs(self) -> None:
        if not self._runs:
            return
        self._runs = [merge_runs(np.concatenate(self._runs))]
        self._run_rows = self._compacted_runs = len(self._runs[0])

    def observed(self, files: list[FileNotes]) -> Observed:
        self._compact_activity()
        self._compact_runs()
        activity = (
            self._parts[0].to_pandas()
            if self._parts
            else pd.DataFrame({c: pd.Series(dtype="int64") for c in [*KEYS, "requests", "first", "last"]})
        )
        runs = pd.DataFrame(
            self._runs[0] if self._runs else np.zeros((0, 5), np.int64),
            columns=["device", "client", "first", "last", "requests"],
        )
        # One person per user, however the logs spelled the name (classify.person_keys).
        persons, tenants_note = person_keys(self.users.values)
        person_ids = {key: i for i, key in enumerate(dict.fromkeys(persons))}  # "" (no user) stays 0
        if len(person_ids) < len(persons) and not activity.empty:
            remap = np.array([person_ids[key] for key in persons], dtype=np.int64)
            activity["user"] = remap[activity["user"].to_numpy()]
            activity = activity.groupby(KEYS, as_index=False, sort=False).agg(
                requests=("requests", "sum"), first=("first", "min"), last=("last", "max")
            )
        device_types = [""] * len(self.devices)
        for d, t in self._device_type.items():
            device_types[d] = self.device_types.values[t]  # "" when its first line named no type
        return Observed(
            activity=activity,
            runs=runs,
            addresses=list(self.addresses.values),
            agents=list(self.agents.values),
            agent_families=[
                AGENT_FAMILIES[f] for f in self.agents.derived_codes(pa.array(self.agents.values))
            ],
            device_types=device_types,
            users=len(person_ids) - 1,
            tenants_note=tenants_note,
            bucket_s=self.bucket_s,
            time_scale=self.time_scale,
            files=files,
        )


def merge_runs(runs: np.ndarray) -> np.ndarray:
    """Runs (device, client, first, last, requests) put in time order per device, with neighbours from
    the same address joined into one: what is left are the device's real stretches at one address."""
    if len(runs) == 0:
        return runs
    runs = runs[np.lexsort((runs[:, 2], runs[:, 0]))]
    same = (runs[1:, 0] == runs[:-1, 0]) & (runs[1:, 1] == runs[:-1, 1])
    starts = np.flatnonzero(np.concatenate(([True], ~same)))
    merged = runs[starts].copy()
    merged[:, 3] = np.maximum.reduceat(runs[:, 3], starts)
    merged[:, 4] = np.add.reduceat(runs[:, 4], starts)
    return merged

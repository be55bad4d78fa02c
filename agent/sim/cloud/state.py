"""State of the simulated cloud: activation tokens, agents, streams; optional SQLite store.

Records live in memory; with a store every change is written (one transaction per write,
in a worker thread) so a restart with the same database finds them again.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from agent.errors import InvalidArgument, NotFound

Table = Literal["tokens", "agents", "streams", "meta"]
TABLES: tuple[Table, ...] = ("tokens", "agents", "streams", "meta")
MAX_TOKENS = 10_000
MAX_AGENTS = 10_000
MAX_STREAMS = 10_000
MAX_LOG_LINES = 200


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Token:
    token: str
    request: dict[str, Any]
    created_ms: int
    expires_ms: int
    public_key: str | None = None
    agent_id: str | None = None
    #: The stream the token makes: named at creation (None in records saved before that).
    stream_name: str | None = None
    answer: dict[str, Any] | None = None

    def expired(self, at_ms: int) -> bool:
        return self.public_key is None and at_ms >= self.expires_ms

    def view(self) -> dict[str, Any]:
        """The Watcher `AgentActivationToken` shape for `GET`: the stream (also as
        `camera_name`, as the prose says) only once an agent used the token."""
        out: dict[str, Any] = {"token": self.token}
        if self.public_key is not None and self.stream_name:
            out["stream_name"] = self.stream_name
            out["camera_name"] = self.stream_name
        return out

    def created_view(self) -> dict[str, Any]:
        """The answer to its creation: the token and the name of the stream it will make."""
        return {"token": self.token, "stream_name": self.stream_name}


@dataclass
class Agent:
    id: str
    key: str
    agent_type: str = "router"
    version: str = ""
    serial: str = ""
    model: str = ""
    layout: dict[str, Any] = field(default_factory=dict)
    description: dict[str, Any] = field(default_factory=dict)
    created_ms: int = 0
    streams: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)

    def log(self, line: str) -> None:
        self.logs.append(f"{now_ms()} {line}")
        del self.logs[:-MAX_LOG_LINES]


@dataclass
class Stream:
    name: str
    config: dict[str, Any]
    agent_id: str | None = None
    camera: dict[str, Any] | None = None


class Store:
    """SQLite (WAL) key/value tables of JSON records; every write is one transaction."""

    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            for table in TABLES:
                self._db.execute(
                    f"CREATE TABLE IF NOT EXISTS {table} (k TEXT PRIMARY KEY, v TEXT NOT NULL)"
                )

    def load(self, table: Table) -> dict[str, Any]:
        with self._lock:
            rows = self._db.execute(f"SELECT k, v FROM {table}").fetchall()  # noqa: S608
        return {k: json.loads(v) for k, v in rows}

    def write(self, changes: list[tuple[Table, str, Any | None]]) -> None:
        """Apply puts (value) and deletes (None) atomically."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for table, key, value in changes:
                    if value is None:
                        self._db.execute(f"DELETE FROM {table} WHERE k = ?", (key,))  # noqa: S608
                    else:
                        self._db.execute(
                            f"INSERT OR REPLACE INTO {table} (k, v) VALUES (?, ?)",  # noqa: S608
                            (key, json.dumps(value)),
                        )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CloudState:
    """Tokens, agents and streams. Mutators change memory at once, then persist."""

    def __init__(self, *, token_ttl_s: float = 3600.0, store: Store | None = None) -> None:
        self.token_ttl_s = token_ttl_s
        self.tokens: dict[str, Token] = {}
        self.agents: dict[str, Agent] = {}
        self.streams: dict[str, Stream] = {}
        self.next_agent = 1001
        self.server_id = secrets.token_hex(8)
        self._store = store
        self._write_lock = asyncio.Lock()
        self.activation_lock = asyncio.Lock()

    # -- persistence

    async def load(self) -> None:
        """Read every record from the store (no-op in memory)."""
        if self._store is None:
            return
        store = self._store
        data = await asyncio.to_thread(lambda: {t: store.load(t) for t in TABLES})
        self.tokens = {k: Token(**v) for k, v in data["tokens"].items()}
        self.agents = {k: Agent(**v) for k, v in data["agents"].items()}
        self.streams = {k: Stream(**v) for k, v in data["streams"].items()}
        meta = data["meta"]
        self.next_agent = int(meta.get("next_agent", self.next_agent))
        self.server_id = str(meta.get("server_id", self.server_id))
        await self._persist(("meta", "server_id"))

    async def _persist(self, *keys: tuple[Table, str]) -> None:
        """Write the current value (or absence) of each record, in one transaction."""
        if self._store is None:
            return
        async with self._write_lock:
            changes: list[tuple[Table, str, Any | None]] = []
            for table, key in keys:
                changes.append((table, key, self._snapshot(table, key)))
            changes.append(("meta", "next_agent", self.next_agent))
            await asyncio.to_thread(self._store.write, changes)

    def _snapshot(self, table: Table, key: str) -> Any | None:
        if table == "meta":
            return {"server_id": self.server_id, "next_agent": self.next_agent}.get(key)
        obj: Token | Agent | Stream | None
        if table == "tokens":
            obj = self.tokens.get(key)
        elif table == "agents":
            obj = self.agents.get(key)
        else:
            obj = self.streams.get(key)
        return None if obj is None else asdict(obj)

    # -- tokens

    async def create_token(self, request: dict[str, Any], *, at_ms: int | None = None) -> Token:
        if len(self.tokens) >= MAX_TOKENS:
            self.purge_expired()
            if len(self.tokens) >= MAX_TOKENS:
                raise InvalidArgument("too many activation tokens")
        created = now_ms() if at_ms is None else at_ms
        tok = Token(
            token=secrets.token_urlsafe(18),
            request=request,
            created_ms=created,
            expires_ms=created + int(self.token_ttl_s * 1000),
            stream_name=self.new_stream_name(),
        )
        self.tokens[tok.token] = tok
        await self._persist(("tokens", tok.token))
        return tok

    def token(self, token: str, *, at_ms: int | None = None) -> Token:
        """A live or used token; NotFound for unknown or expired-unused ones."""
        tok = self.tokens.get(token)
        if tok is None or tok.expired(now_ms() if at_ms is None else at_ms):
            raise NotFound("no such activation token")
        return tok

    def purge_expired(self) -> list[str]:
        at = now_ms()
        gone = [t for t, tok in self.tokens.items() if tok.expired(at)]
        for t in gone:
            del self.tokens[t]
        return gone

    # -- agents and streams

    def agent_by_key(self, key: str) -> Agent | None:
        return next((a for a in self.agents.values() if a.key == key), None)

    def agent(self, agent_id: str) -> Agent:
        try:
            return self.agents[agent_id]
        except KeyError:
            raise NotFound(f"no agent {agent_id!r}") from None

    async def new_agent(self, key: str, ingest: str) -> Agent:
        if len(self.agents) >= MAX_AGENTS:
            raise InvalidArgument("too many agents")
        agent_id = str(self.next_agent)
        self.next_agent += 1
        created = now_ms()
        agent = Agent(
            id=agent_id,
            key=key,
            created_ms=created,
            layout={"ingest": ingest, "created_at": created, "originator": "other"},
        )
        self.agents[agent_id] = agent
        await self._persist(("agents", agent_id))
        return agent

    async def save_agent(self, agent: Agent) -> None:
        self.agents[agent.id] = agent
        await self._persist(("agents", agent.id))

    async def delete_agent(self, agent_id: str) -> list[str]:
        """Delete an agent and its streams; returns the stream names removed."""
        agent = self.agents.pop(agent_id, None)
        if agent is None:
            raise NotFound(f"no agent {agent_id!r}")
        names = [n for n, s in self.streams.items() if s.agent_id == agent_id]
        for name in names:
            del self.streams[name]
        await self._persist(("agents", agent_id), *[("streams", n) for n in names])
        return names

    def stream(self, name: str) -> Stream:
        try:
            return self.streams[name]
        except KeyError:
            raise NotFound(f"no stream {name!r}") from None

    async def save_stream(self, stream: Stream) -> None:
        if stream.name not in self.streams and len(self.streams) >= MAX_STREAMS:
            raise InvalidArgument("too many streams")
        self.streams[stream.name] = stream
        await self._persist(("streams", stream.name))

    async def delete_stream(self, name: str) -> None:
        stream = self.streams.pop(name, None)
        if stream is None:
            raise NotFound(f"no stream {name!r}")
        keys: list[tuple[Table, str]] = [("streams", name)]
        agent = self.agents.get(stream.agent_id or "")
        if agent is not None and name in agent.streams:
            agent.streams.remove(name)
            keys.append(("agents", agent.id))
        await self._persist(*keys)

    async def bind(self, tok: Token, agent: Agent, stream: Stream, answer: dict[str, Any]) -> None:
        """Record a successful activation: token used, stream made, agent owns it."""
        tok.public_key = agent.key
        tok.agent_id = agent.id
        tok.stream_name = stream.name
        tok.answer = answer
        self.streams[stream.name] = stream
        if stream.name not in agent.streams:
            agent.streams.append(stream.name)
        await self._persist(("tokens", tok.token), ("streams", stream.name), ("agents", agent.id))

    def new_stream_name(self) -> str:
        """A stream name no stream has and no token has been given."""
        taken = set(self.streams)
        taken.update(t.stream_name for t in self.tokens.values() if t.stream_name)
        n = len(taken) + 1
        while f"cam-{n}" in taken:
            n += 1
        return f"cam-{n}"

    async def touch_agent(self, agent: Agent) -> None:
        """Persist an agent after its info changed."""
        await self._persist(("agents", agent.id))

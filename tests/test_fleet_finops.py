"""Budgets and feedback with the fleet (PostgreSQL) store (issue 14 §4, §5): a ``raise`` budget
counts what the other processes of the fleet spent, read from the server off the caller's thread;
a server that is down never holds a call; feedback is stored in the fleet and shows in the route
report of ``--store postgresql://``. The server is a throwaway cluster (``tests/postgres_cluster.py``).

Prices are made for hand arithmetic, as in ``tests/test_budgets.py``: every call with
:data:`MESSAGES` costs exactly 7 USD.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

import llmmeter
from llmmeter.budgets import BudgetBook
from llmmeter.cli import main
from llmmeter.record import CallKind, CallRecord, Cost, Timings
from llmmeter.store.postgres import PostgresStore
from llmmeter.testing import LocalOpenAIServer

from .conftest import Telemetry
from .postgres_cluster import PostgresCluster, postgres_cluster, postgres_url
from .test_budgets import CALL_COST, MESSAGES, MODEL, client, registry, server

__all__ = ["client", "postgres_cluster", "postgres_url", "server"]  # the fixtures, used by name below

psycopg = pytest.importorskip("psycopg", reason='psycopg not installed (pip install "llmmeter[postgresql]")')

SEARCH_BUDGET = llmmeter.Budget(limit_usd="21", match={"team": "search"}, action="raise")


@pytest.fixture(autouse=True)
def _read_at_every_call(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMMETER_BUDGET_REFRESH_S", "0")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # the spools and the feedback outbox


def ask(client: openai.OpenAI) -> Any:
    return client.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]


def book_of(settings: llmmeter.Settings) -> BudgetBook:
    assert settings.budgets is not None
    return settings.budgets


def spend_in_another_process(url: str, server: LocalOpenAIServer, calls: int, tmp_path: Path) -> None:
    """Another host of the fleet: its own process, its own spool, ``calls`` calls for team search."""
    script = textwrap.dedent(
        f"""
        import sys, openai, llmmeter
        sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        from tests.test_budgets import registry
        llmmeter.configure(store={url!r}, pricing=registry())
        client = llmmeter.instrument(openai.OpenAI(base_url={server.base_url!r}, max_retries=0))
        with llmmeter.attributes(team="search"):
            for _ in range({calls}):
                client.chat.completions.create(model="acme-chat", messages={MESSAGES!r})
        assert llmmeter.flush(10)
        """
    )
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "other-host")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert done.returncode == 0, done.stderr


def test_a_raise_budget_refuses_once_the_fleets_spend_reaches_the_limit(
    client: openai.OpenAI, server: LocalOpenAIServer, telemetry: Telemetry, postgres_url: str, tmp_path: Path
) -> None:
    settings = telemetry.reconfigure(store=postgres_url, pricing=registry(), budgets=[SEARCH_BUDGET])
    book = book_of(settings)
    with llmmeter.attributes(team="search"):
        ask(client)  # 7 USD here: delivered to the fleet store, never counted twice
        assert llmmeter.flush(10)
        spend_in_another_process(postgres_url, server, 2, tmp_path)  # 14 USD on another host
        assert book.refresh(10)
        sent = len(server.requests)
        with pytest.raises(llmmeter.BudgetExceeded) as refused:
            ask(client)
    assert len(server.requests) == sent  # refused before it went out
    assert refused.value.spent == 3 * CALL_COST == book.spent(SEARCH_BUDGET, {"team": "search"})

    with llmmeter.attributes(team="ads"):
        ask(client)  # another team: not covered
    assert len(server.requests) == sent + 1


def test_with_the_fleet_store_down_calls_go_out_and_one_warning_says_why(
    client: openai.OpenAI,
    server: LocalOpenAIServer,
    telemetry: Telemetry,
    postgres_url: str,
    postgres_cluster: PostgresCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    postgres_cluster.stop()
    try:
        with caplog.at_level(logging.WARNING, logger="llmmeter"):
            settings = telemetry.reconfigure(store=postgres_url, pricing=registry(), budgets=[SEARCH_BUDGET])
            sent = len(server.requests)
            with llmmeter.attributes(team="search"):
                for _ in range(3):  # 7, 14, 21 USD: each started under the limit; each tried a read
                    ask(client)
            assert not book_of(settings).refresh(10)
    finally:
        postgres_cluster.start()
    assert len(server.requests) - sent == 3
    failures = [r for r in caplog.records if "budgets cannot read other processes' spend" in r.getMessage()]
    assert len(failures) == 1 and failures[0].levelno == logging.WARNING
    assert "\n" not in failures[0].getMessage()

    assert llmmeter.flush(10)  # the spooled records reach the server once it is back
    assert book_of(settings).refresh(10)
    with llmmeter.attributes(team="search"), pytest.raises(llmmeter.BudgetExceeded) as refused:
        ask(client)
    assert refused.value.spent == 3 * CALL_COST  # this process's own rows, read back, are not added


def test_a_server_that_never_answers_holds_no_call(
    client: openai.OpenAI, server: LocalOpenAIServer, telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="llmmeter")
    with socket.socket() as silent:  # the kernel completes the handshake; nothing ever answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        url = f"postgresql://llmmeter@127.0.0.1:{silent.getsockname()[1]}/fleet"
        settings = telemetry.reconfigure(
            store=url, pricing=registry(), budgets=[SEARCH_BUDGET], exit_timeout=0.5
        )
        sent = len(server.requests)
        with llmmeter.attributes(team="search"):
            for _ in range(3):
                ask(client)
        assert len(server.requests) - sent == 3
        assert not book_of(settings).refresh(0.2)  # the first read is still waiting for the server
    assert not book_of(settings).refresh(10)  # closed: the read fails, and is logged
    telemetry.reconfigure(store=None)
    failures = [r for r in caplog.records if "budgets cannot read other processes' spend" in r.getMessage()]
    assert len(failures) == 1 and url.split("@")[1] in failures[0].getMessage()


def test_rows_committed_after_a_read_still_count_once(
    telemetry: Telemetry, postgres_url: str, tmp_path: Path
) -> None:
    """A row whose ``inserted_at`` is before a read but which commits after it (a slow writer's
    transaction) is counted by the next read, and a row read twice is counted once."""
    budget = llmmeter.Budget(limit_usd="100", per="month", match={"user_id": "*"}, action="raise")
    settings = telemetry.reconfigure(store=postgres_url, pricing=registry(), budgets=[budget])
    book = book_of(settings)
    another_host = PostgresStore(postgres_url, spool_dir=tmp_path / "another-host")
    try:
        write(another_host, "u-1", "3.5", "another-host.1")
        assert book.refresh(10)
        with psycopg.connect(postgres_url, autocommit=True) as conn, conn.transaction():
            conn.execute(
                "INSERT INTO llmmeter.records (start_time_unix_ns, kind, attributes, cost_amount, record_id) "
                "VALUES (%s, 'llm', %s, 2, 'another-host.slow')",
                (_now_ns(), json.dumps({"user_id": "u-1"})),
            )
            assert book.refresh(10)  # not committed yet: not seen
            assert book.spent(budget, {"user_id": "u-1"}) == Decimal("3.5")
        write(another_host, "u-2", "1", "another-host.2")
        assert book.refresh(10) and book.refresh(10)
    finally:
        another_host.close()
    assert book.spent(budget, {"user_id": "u-1"}) == Decimal("5.5")
    assert book.spent(budget, {"user_id": "u-2"}) == Decimal(1)


def test_a_warn_budget_is_told_when_another_hosts_spend_crosses_its_threshold(
    telemetry: Telemetry, postgres_url: str, tmp_path: Path
) -> None:
    events: list[llmmeter.BudgetEvent] = []
    budget = llmmeter.Budget(limit_usd="4", per="hour", match={"user_id": "*"}, action="warn")
    settings = telemetry.reconfigure(
        store=postgres_url, pricing=registry(), budgets=[budget], on_budget=events.append
    )
    another_host = PostgresStore(postgres_url, spool_dir=tmp_path / "another-host")
    try:
        write(another_host, "u-1", "3.5", "another-host.1")  # 87.5 % of u-1's hour
        write(another_host, "u-2", "1", "another-host.2")
    finally:
        another_host.close()
    assert book_of(settings).refresh(10)
    assert [(e.key, e.threshold, e.spent) for e in events] == [
        ({"user_id": "u-1"}, Decimal("0.8"), Decimal("3.5"))
    ]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")
def test_a_forked_child_counts_its_parents_spend_once(
    client: openai.OpenAI, telemetry: Telemetry, postgres_url: str
) -> None:
    """gunicorn --preload: after the fork the parent's spend is another process's spend, read from
    the fleet store, not also this process's own."""
    settings = telemetry.reconfigure(store=postgres_url, pricing=registry(), budgets=[SEARCH_BUDGET])
    book = book_of(settings)
    with llmmeter.attributes(team="search"):
        ask(client)
    assert llmmeter.flush(10) and book.refresh(10)
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        code = 1
        try:
            refreshed = book.refresh(10)
            code = 0 if refreshed and book.spent(SEARCH_BUDGET, {"team": "search"}) == CALL_COST else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert book.spent(SEARCH_BUDGET, {"team": "search"}) == CALL_COST


def _now_ns() -> int:
    import time

    return time.time_ns()


def write(store: PostgresStore, user_id: str, cost: str, record_id: str) -> None:
    store.write(
        CallRecord(
            operation="chat",
            provider="acme",
            request_model=MODEL,
            timings=Timings(start_time_unix_ns=_now_ns(), duration_s=0.1),
            cost=Cost(amount=Decimal(cost)),
            attributes={"user_id": user_id},
            record_id=record_id,
            kind=CallKind.LLM,
        )
    )
    assert store.flush(10)


def route_report(url: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["report", "--kind", "route", "--by", "name", "--format", "json", "--store", url]) == 0
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    return document


def test_feedback_is_stored_in_the_fleet_and_shows_in_the_route_report(
    client: openai.OpenAI,
    telemetry: Telemetry,
    postgres_url: str,
    postgres_cluster: PostgresCluster,
    capsys: pytest.CaptureFixture[str],
) -> None:
    telemetry.reconfigure(store=postgres_url, pricing=registry())
    with llmmeter.route("support-router"):
        good, bad = ask(client), ask(client)
    with llmmeter.route("billing-router"):
        unjudged = ask(client)
    assert llmmeter.flush(10) and unjudged.id

    given = llmmeter.feedback(good.id, score=1.0, label="correct")
    (call,) = [r for r in telemetry.records if r.response_id == good.id]
    assert given.stored and (given.record_id, given.trace_id) == (call.record_id, call.trace_id)

    postgres_cluster.stop()
    try:  # given while the server is down: kept in the outbox, not linked to its call yet
        late = llmmeter.feedback(bad.id, score=0.0, label="wrong", comment="nul \x00 inside")
    finally:
        postgres_cluster.start()
    assert late.stored and late.record_id is None
    llmmeter.feedback(bad.id, label="escalate_needed")  # delivers the outbox with it

    groups = {g["key"]["name"]: g for g in route_report(postgres_url, capsys)["groups"]}
    assert groups["support-router"]["feedback_count"] == 3
    assert groups["support-router"]["feedback_mean"] == 0.5  # (1 + 0) / 2 scored
    assert groups["billing-router"]["feedback_count"] == 0
    with psycopg.connect(postgres_url) as conn:
        comments = conn.execute("SELECT comment FROM llmmeter.feedback WHERE comment IS NOT NULL").fetchall()
    assert comments == [("nul \\x00 inside",)]

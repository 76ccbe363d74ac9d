"""A model router, measured: routes, escalations, fallbacks, feedback and a budget that acts first.

Runs with no network and no API key, against a local OpenAI-compatible server. A support router
answers with a small model and escalates to a large one when it is not confident; when the small
model fails, it falls back to the large one (llmmeter notices by itself). Users judge the answers
with ``llmmeter.feedback``. The ``support`` team has a daily budget that refuses calls once spent,
and an alert at 80 % and 100 %. It ends by printing the route report from the store
(``llmmeter report --kind route``).

    python examples/routing.py [--store PATH]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import openai

import llmmeter
from llmmeter.cli import main as report_main
from llmmeter.testing import LocalOpenAIServer, Pacing, pacing_headers

SMALL, LARGE = "gpt-4o-mini", "gpt-4o"
QUESTIONS = [  # (question, the small model is down, the user's score of the answer)
    ("Where is my parcel?", False, 1.0),
    ("Cancel my order from yesterday and refund the shipping fee to my card please.", False, 1.0),
    ("Can I change the delivery address?", True, 1.0),
    ("Why was I charged twice for the same subscription in two different currencies?", False, 1.0),
    ("Do you ship to Norway or Iceland?", False, 0.0),  # should have been escalated
    ("Is there a discount for students?", False, 1.0),  # the team's daily budget is spent by now
]


def confident(question: str) -> bool:
    """The router's own rule (a stand-in for a classifier): long questions need the large model."""
    return len(question.split()) < 10


@llmmeter.route("support-router")
def answer(client: openai.OpenAI, question: str, small_model_down: bool) -> openai.types.chat.ChatCompletion:
    """Small model first; escalate when not confident; a failed call falls back to the large model."""
    messages = [{"role": "user", "content": question}]
    try:
        down = pacing_headers(error_status=503) if small_model_down else None
        reply = client.chat.completions.create(model=SMALL, messages=messages, extra_headers=down)  # type: ignore[arg-type]
    except openai.APIStatusError:
        return client.chat.completions.create(model=LARGE, messages=messages)  # type: ignore[arg-type]
    if not confident(question):
        llmmeter.escalate("low_confidence")
        reply = client.chat.completions.create(model=LARGE, messages=messages)  # type: ignore[arg-type]
    return reply


def alert(event: llmmeter.BudgetEvent) -> None:
    """What an on_budget callback sees (send it to your pager instead)."""
    print(f"  [budget] {event.budget.name}: {event.threshold:.0%} reached ({event.spent} USD)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", type=Path, help="SQLite store to write (default: a temporary file)")
    args = parser.parse_args()
    store = args.store or Path(tempfile.mkdtemp(prefix="llmmeter-routing-")) / "records.sqlite3"

    support_budget = llmmeter.Budget(
        limit_usd="0.00076", per="day", match={"team": "support"}, action="raise"
    )
    llmmeter.configure(store=store, budgets=[support_budget], on_budget=alert)
    with LocalOpenAIServer(pacing=Pacing(ttft_ms=5, itl_ms=1, tokens=20), served_model=None) as server:
        # The local server stands in for api.openai.com: record (and price) its calls as OpenAI's.
        client = llmmeter.instrument(
            openai.OpenAI(base_url=server.base_url, api_key="demo", max_retries=0), provider="openai"
        )
        judged = []
        with llmmeter.attributes(team="support"):
            for question, small_model_down, score in QUESTIONS:
                try:
                    reply = answer(client, question, small_model_down)
                except llmmeter.BudgetExceeded as refused:
                    print(f"refused before sending: {refused}")
                    continue
                judged.append((reply.id, score))
                print(f"{reply.model:12s} <- {question}")
        for response_id, score in judged:  # later, the users' thumbs up or down
            llmmeter.feedback(response_id, score=score, label="correct" if score else "wrong")
    llmmeter.flush()

    print(f"\n$ llmmeter report --store {store} --kind route --by name,final_model")
    return report_main(["report", "--store", str(store), "--kind", "route", "--by", "name,final_model"])


if __name__ == "__main__":
    raise SystemExit(main())

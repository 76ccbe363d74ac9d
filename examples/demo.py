"""llmmeter's offline demo: the real ``openai`` client, a local server, a cost and latency report.

Runs with no network and no API key: it starts an OpenAI-compatible server on 127.0.0.1 that
streams at a known pace, sends streamed and non-streamed requests through an instrumented client
under different teams, features and users, and prints what ``llmmeter report`` shows.

    python examples/demo.py [--store PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import openai

import llmmeter
from llmmeter.cli import main as llmmeter_cli
from llmmeter.testing import LocalOpenAIServer, Pacing, pacing_headers

QUESTION = [{"role": "user", "content": "Summarize the quarterly cost report in two sentences."}]


def chat_traffic(client: openai.OpenAI) -> None:
    """A few streamed and non-streamed chat calls, attributed to teams, features and users."""
    with llmmeter.attributes(team="search", feature="summaries"):
        for user in ("u-17", "u-42"):
            with llmmeter.attributes(user_id=user):
                stream = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True)
                for chunk in stream:
                    print(chunk.choices[0].delta.content or "", end="", flush=True)
                print()
        client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)

    with llmmeter.attributes(team="support", feature="triage", user_id="u-7"):
        client.chat.completions.create(
            model="gpt-4.1", messages=QUESTION, extra_headers=pacing_headers(tokens=40, cached_tokens=12)
        )
        client.embeddings.create(model="text-embedding-3-small", input=["ticket 1", "ticket 2"])


@llmmeter.metered(name="triage-agent", operation="invoke_agent")
def triage_agent(client: openai.OpenAI, ticket: str) -> str:
    """An agent step: two LLM calls whose tokens and cost roll up into the step's span."""
    label = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": ticket}]
    )
    answer = client.responses.create(
        model="o4-mini",
        input=f"Draft a reply to: {ticket}",
        extra_headers=pacing_headers(reasoning_tokens=30),
    )
    return f"{label.choices[0].message.content} / {answer.output_text}"


async def async_traffic(base_url: str) -> None:
    """The async client, concurrently, under another team."""
    client = llmmeter.instrument(openai.AsyncOpenAI(base_url=base_url, api_key="demo"), provider="openai")

    async def one(i: int) -> None:
        with llmmeter.attributes(team="research", feature="batch-eval", user_id=f"eval-{i}"):
            stream = await client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True)
            async for _ in stream:
                pass

    await asyncio.gather(*(one(i) for i in range(4)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", type=Path, help="SQLite store to write (default: a temporary file)")
    args = parser.parse_args()
    store = args.store or Path(tempfile.mkdtemp(prefix="llmmeter-demo-")) / "records.sqlite3"

    llmmeter.configure(store=store)
    pacing = Pacing(ttft_ms=120, itl_ms=15, tokens=24)
    with LocalOpenAIServer(pacing=pacing, served_model=None) as server:
        # The local server stands in for api.openai.com: record (and price) its calls as OpenAI's.
        client = llmmeter.instrument(
            openai.OpenAI(base_url=server.base_url, api_key="demo"), provider="openai"
        )
        print(f"local OpenAI-compatible server: {server.base_url}\n")
        chat_traffic(client)
        with llmmeter.attributes(team="support", feature="triage"):
            print(triage_agent(client, "My invoice is wrong"))
        asyncio.run(async_traffic(server.base_url))
    llmmeter.flush()

    print(f"\n$ llmmeter report --store {store} --by model,team\n")
    return llmmeter_cli(["report", "--store", str(store), "--by", "model,team"])


if __name__ == "__main__":
    raise SystemExit(main())

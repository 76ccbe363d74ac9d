"""README.md stays true: its Python snippets run, its commands exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_gives_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    setup = README.split("## Use")[0]
    commands = re.findall(r"```bash\n(.*?)\n```", setup, flags=re.S)
    assert len(commands) == 2
    demo, tests = commands
    assert "examples/demo.py" in demo
    assert "pytest" in tests
    assert tests.strip() in (ROOT / ".ci" / "run").read_text()


def test_the_pricing_snippet_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    (snippet,) = [s for s in SNIPPETS if "PricingRegistry.default()" in s]
    monkeypatch.chdir(ROOT)
    import llmmeter

    namespace: dict[str, object] = {"llmmeter": llmmeter}
    exec(compile(snippet, "README.md", "exec"), namespace)  # our own README
    reg = namespace["reg"]
    assert isinstance(reg, llmmeter.PricingRegistry)
    resolved = reg.lookup("my-azure-deployment")
    assert resolved is not None and "gpt-4o-2024-08-06" in resolved.ref
    assert reg.lookup("acme-llama-70b") is not None
    llmmeter.configure(store=None, pricing=None)


@pytest.mark.parametrize(
    "command", ["llmmeter prices show gpt-4o-mini", "llmmeter prices check examples/prices/negotiated.yaml"]
)
def test_the_pricing_commands_work(command: str) -> None:
    argv = [sys.executable, "-m", "llmmeter", *command.split()[1:]]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert command in README


def _snippet(marker: str) -> str:
    (snippet,) = [s for s in SNIPPETS if marker in s]
    return snippet


def test_every_python_snippet_is_run_by_a_test() -> None:
    assert len(SNIPPETS) == 4  # the Use snippet, the other clients, the pricing snippet, routing


def test_the_use_snippets_run_and_leave_a_priced_attributed_record_in_the_store(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import anthropic
    import ollama
    from google import genai

    import llmmeter
    from llmmeter.store import read_records, resolve_store_path
    from llmmeter.testing import LocalOpenAIServer

    with LocalOpenAIServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
        monkeypatch.setenv("GOOGLE_API_KEY", "test-key")
        namespace: dict[str, object] = {}
        exec(compile(_snippet("llmmeter.attributes(user_id"), "README.md", "exec"), namespace)  # our README
        assert llmmeter.flush(timeout=10)
        exec(compile(_snippet("anthropic.Anthropic()"), "README.md", "exec"), namespace)
    assert capsys.readouterr().out  # the stream was printed
    (record,) = read_records(resolve_store_path())
    assert record.attributes["user_id"] == "u-17" and record.attributes["team"] == "search"
    assert record.usage is not None and record.usage.output_tokens
    assert record.cost is not None and "inferred-provider=openai" in str(record.cost.price_ref)
    assert isinstance(namespace["claude"], anthropic.Anthropic)
    assert isinstance(namespace["gemini"], genai.Client)
    assert isinstance(namespace["local"], ollama.Client)
    llmmeter.configure(store=None, pricing=None)


def test_the_routing_snippet_runs_and_leaves_a_route_and_linked_feedback_in_the_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import llmmeter
    from llmmeter import semconv as sc
    from llmmeter.feedback import read_feedback
    from llmmeter.store import read_records, resolve_store_path
    from llmmeter.testing import LocalOpenAIServer

    with LocalOpenAIServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        namespace: dict[str, object] = {}
        exec(
            compile(_snippet('llmmeter.route("support-router")'), "README.md", "exec"), namespace
        )  # our README
        assert llmmeter.flush(timeout=10)
    settings = llmmeter.get_settings()
    assert settings.budgets is not None and len(settings.budgets.budgets) == 2
    records = read_records(resolve_store_path())
    (route,) = [r for r in records if r.operation == sc.ROUTE_OPERATION]
    (call,) = [r for r in records if r.kind == "llm"]
    assert route.attributes[sc.ROUTE_FINAL_MODEL] == call.response_model
    assert call.attributes[sc.ROUTE_ATTEMPT] == 1 and call.attributes["team"] == "search"
    (judgement,) = read_feedback(resolve_store_path())
    assert judgement.record_id == call.record_id and judgement.label == "correct"
    llmmeter.configure(store=None, pricing=None)

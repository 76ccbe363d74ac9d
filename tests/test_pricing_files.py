"""Price files: the documented schema loads; a bad file is reported precisely and never half-loads."""

from __future__ import annotations

import argparse
import io
from decimal import Decimal
from pathlib import Path

import pytest

from llmmeter.pricing import BundledSource, PriceFileError, PricingRegistry, check_price_file
from llmmeter.pricing.cli import add_subcommand

GOOD_YAML = """\
version: 1
provider: acme-cloud
defaults:
  source_url: https://example.com/contract.pdf
  checked_on: 2026-01-15
aliases:
  prod-chat: acme-llama-70b
models:
  - model: acme-llama-70b
    input_per_mtok: "0.60"
    output_per_mtok: "0.80"
    cached_input_per_mtok: 0.15
    tiers:
      - {above_input_tokens: 100000, input_per_mtok: "1.20"}
    service_tiers:
      batch: {factor: "0.5"}
  - model: acme-self-hosted
    usd_per_gpu_hour: "2.49"
    gpu_count: 8
    tokens_per_second: 2400
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_valid_yaml_file_loads_prices_aliases_and_provenance(tmp_path: Path) -> None:
    registry = PricingRegistry()
    registry.load(write(tmp_path, "prices.yaml", GOOD_YAML))
    resolved = registry.lookup("prod-chat", provider="acme-cloud")
    assert resolved is not None
    assert resolved.price.input_per_mtok == Decimal("0.60")
    assert resolved.price.source_url == "https://example.com/contract.pdf"
    assert str(resolved.price.checked_on) == "2026-01-15"
    gpu = registry.lookup("acme-self-hosted")
    assert gpu is not None and gpu.provider == "acme-cloud"


def test_yaml_floats_become_the_decimal_they_are_written_as(tmp_path: Path) -> None:
    registry = PricingRegistry()
    registry.load(write(tmp_path, "prices.yaml", GOOD_YAML))
    resolved = registry.lookup("acme-llama-70b")
    assert resolved is not None
    assert resolved.price.cached_input_per_mtok == Decimal("0.15")


def test_a_valid_json_file_loads(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "prices.json",
        '{"models": [{"model": "acme", "input_per_mtok": "1.5", "output_per_mtok": "2"}],'
        ' "aliases": {"x": "acme"}}',
    )
    registry = PricingRegistry()
    registry.load(path)
    resolved = registry.lookup("x")
    assert resolved is not None and resolved.price.input_per_mtok == Decimal("1.5")


def test_errors_name_the_file_the_line_the_model_and_the_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "bad.yaml",
        "models:\n"
        "  - model: acme-llama\n"
        "    input_per_mtok: '0.60'\n"
        "    output_per_mtokk: '0.80'\n"
        "  - model: other\n"
        "    input_per_mtok: -1\n"
        "    output_per_mtok: abc\n",
    )
    problems = check_price_file(path)
    rendered = [str(problem) for problem in problems]
    assert (
        f"{path}:4: models[0] (model 'acme-llama'): field 'output_per_mtokk': Extra inputs are not permitted"
        in (rendered)
    )
    assert any(p.line == 2 and p.model == "acme-llama" and p.field == "output_per_mtok" for p in problems)
    assert any(p.line == 6 and p.model == "other" and p.field == "input_per_mtok" for p in problems)
    assert any(p.line == 7 and p.model == "other" and p.field == "output_per_mtok" for p in problems)
    assert len(problems) == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: [\n  {model: a,\n", "invalid YAML"),
        ("- just a list\n", "must be a mapping"),
        ("models: {a: 1}\n", "must be a list"),
        ("prices: []\n", "unknown top-level key"),
        ("version: 2\nmodels: []\n", "unsupported version"),
        ("models:\n  - input_per_mtok: '1'\n    output_per_mtok: '1'\n", "missing or empty"),
        ("models:\n  - {model: 're:(', input_per_mtok: '1', output_per_mtok: '1'}\n", "invalid pattern"),
        ("models:\n  - {model: a, input_per_mtok: true, output_per_mtok: '1'}\n", "not a boolean"),
        (
            "models:\n  - {model: a, input_per_mtok: '1', output_per_mtok: '1',"
            " effective_from: 2025-02-01, effective_to: 2025-01-01}\n",
            "effective_to must be after effective_from",
        ),
        (
            "models:\n  - {model: a, input_per_mtok: '1', output_per_mtok: '1'}\n"
            "  - {model: a, input_per_mtok: '2', output_per_mtok: '2', effective_from: 2025-01-01}\n",
            "in force on the same days",
        ),
        ("models: []\naliases: {a: b, b: a}\n", "alias cycle"),
        ("models: []\naliases: {a: a}\n", "cannot target itself"),
        (
            "models:\n  - {model: a, input_per_mtok: '1', output_per_mtok: '1',"
            " service_tiers: {batch: {factor: 0}}}\n",
            "greater than 0",
        ),
    ],
)
def test_each_kind_of_mistake_is_reported(tmp_path: Path, text: str, message: str) -> None:
    problems = check_price_file(write(tmp_path, "prices.yaml", text))
    assert problems, text
    assert any(message in str(problem) for problem in problems), [str(p) for p in problems]


def test_invalid_json_reports_its_line(tmp_path: Path) -> None:
    problems = check_price_file(write(tmp_path, "prices.json", '{\n  "models": [,]\n}'))
    assert len(problems) == 1 and problems[0].line == 2 and "invalid JSON" in problems[0].message


def test_a_missing_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    problems = check_price_file(tmp_path / "nope.yaml")
    assert len(problems) == 1 and "cannot read" in problems[0].message


def test_a_malformed_file_loads_nothing(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "half.yaml",
        "models:\n"
        "  - {model: good-model, input_per_mtok: '1', output_per_mtok: '1'}\n"
        "  - {model: bad-model, input_per_mtok: 'x', output_per_mtok: '1'}\n"
        "aliases: {my-alias: good-model}\n",
    )
    registry = PricingRegistry()
    with pytest.raises(PriceFileError) as error:
        registry.load(path)
    assert len(error.value.problems) == 1
    assert registry.lookup("good-model") is None
    assert registry.lookup("my-alias") is None


def run_cli(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="llmmeter")
    add_subcommand(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    out = io.StringIO()
    status = args.func(args, out)
    return status, out.getvalue()


def test_prices_check_exits_non_zero_and_prints_each_problem(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", "models:\n  - {model: a, input_per_mtok: 'x', output_per_mtok: '1'}\n")
    good = write(tmp_path, "good.yaml", GOOD_YAML)
    status, output = run_cli("prices", "check", str(good), str(bad))
    assert status == 1
    assert f"{good}: OK" in output
    assert (
        f"{bad}:2: models[0] (model 'a'): field 'input_per_mtok': Input should be a valid decimal" in output
    )
    assert f"{bad}: 1 problem(s)" in output


def test_prices_check_passes_a_good_file(tmp_path: Path) -> None:
    status, output = run_cli("prices", "check", str(write(tmp_path, "good.yaml", GOOD_YAML)))
    assert status == 0 and output.endswith("OK\n")


def test_prices_show_prints_the_rates_in_force_and_their_source() -> None:
    status, output = run_cli("prices", "show", "gpt-4o-mini")
    assert status == 0
    assert "priced as:  bundled:openai/gpt-4o-mini  (matched via exact)" in output
    assert "  input                0.15\n" in output
    assert "  cached input         0.075\n" in output
    assert "  output               0.6\n" in output
    assert "source:     https://openai.com/api/pricing/" in output


def test_prices_show_honours_provider_date_and_user_files(tmp_path: Path) -> None:
    status, output = run_cli("prices", "show", "o3", "--provider", "openai", "--at", "2025-05-01")
    assert (
        status == 0 and "  input                10\n" in output and "in force:   ... to 2025-06-10" in output
    )
    status, output = run_cli(
        "prices", "show", "prod-chat", "--file", str(write(tmp_path, "p.yaml", GOOD_YAML))
    )
    assert status == 0 and "matched via alias" in output and "above 100000 input tokens: input 1.2" in output


def test_prices_show_exits_non_zero_for_an_unknown_model() -> None:
    status, output = run_cli("prices", "show", "no-such-model")
    assert status == 1 and "no price" in output


def test_every_bundled_price_file_passes_prices_check() -> None:
    data_dir = Path(__import__("llmmeter.pricing", fromlist=["x"]).__file__).parent / "data"
    files = sorted([*data_dir.glob("*.yaml"), *data_dir.glob("*.json")])
    assert len(files) >= 16  # the curated YAML files and the generated reference-*.json
    for path in files:
        assert check_price_file(path) == [], path


def test_every_bundled_price_has_provenance() -> None:
    for entry in BundledSource().entries:
        assert entry.price.source_url and entry.price.checked_on, entry.model
        assert entry.provider, entry.model

"""tools/audit_zoo.py: its sample passes, and it fails where it should.

``nox -s zoo`` runs it on every torchvision classifier and a timm sample;
here the torch-only sample runs (no other package needed), and the harness
itself is checked: a rule without an injected pitfall, a changed model or a
false alarm must fail it.
"""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from dlcomp.auditing import RULES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def zoo():
    spec = importlib.util.spec_from_file_location(
        "audit_zoo", ROOT / "tools" / "audit_zoo.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["audit_zoo"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("audit_zoo", None)


def test_every_rule_has_a_pitfall_to_inject(zoo):
    assert set(RULES) == {what.split(" ")[0] for what in zoo.INJECTIONS}


def test_the_torch_only_sample_is_clean_and_every_pitfall_caught(zoo, capsys):
    status = zoo.main(["--sample", "--no-timing"])
    out = capsys.readouterr().out
    assert status == 0, out
    summary = json.loads(out[out.index("{\n") :])
    assert summary["stock_clean"] == summary["stock_setups"] > 0
    assert summary["injections_caught"] == summary["injections"] >= 3 * len(RULES)
    assert summary["rules_never_injected"] == []


def test_a_stock_model_changed_by_the_audit_fails(zoo, monkeypatch):
    stock = next(s for s in zoo.torch_models() if s.name == "conv-bn-net")
    real = zoo.audit

    def careless(model, *args, **kwargs):
        report = real(model, *args, **kwargs)
        with torch.no_grad():
            next(model.parameters()).add_(1)
        return report

    monkeypatch.setattr(zoo, "audit", careless)
    result = zoo.check_stock(stock, "train", timed=False)
    assert not result.ok
    assert any(
        p.startswith("changed by the audit: state.0.weight") for p in result.problems
    )


def test_a_warning_on_a_stock_model_fails(zoo):
    stock = next(s for s in zoo.torch_models() if s.name == "conv-bn-net")
    build = stock.build

    def with_constant():
        model = build()
        model.scale = torch.ones(3)  # a plain tensor: tensor-attribute warns
        return model

    stock.build = with_constant
    result = zoo.check_stock(stock, "eval", timed=False)
    assert not result.ok
    assert "warning [tensor-attribute]" in result.problems[0]


def test_an_injection_the_audit_misses_fails(zoo, monkeypatch):
    stock = next(s for s in zoo.torch_models() if s.name == "nn.GRU")
    monkeypatch.setitem(zoo.INJECTIONS, "module-cycle", zoo._whole)  # injects nothing
    result = zoo.check_injection(stock, "module-cycle")
    assert not result.ok
    assert "module-cycle not caught" in result.problems[0]

import subprocess
import sys
from dataclasses import fields

import pytest

from model_training.config import TrainConfig, build_parser, field_docs, parse_config
from tests.helpers import ROOT


def test_every_option_has_a_help_line_with_its_default():
    docs = field_docs()
    assert set(docs) == {f.name for f in fields(TrainConfig)}, "a TrainConfig field has no docstring"
    actions = {a.dest: a for a in build_parser()._actions}
    for f in fields(TrainConfig):
        action = actions[f.name]
        assert action.help and action.help.startswith(docs[f.name].replace("%", "%%")[:20])
        assert action.default == f.default
    text = " ".join(build_parser().format_help().split())
    assert "Backbone learning rate in T1" in text and "Head learning rate in T1. (default: 0.001)" in text
    assert "(default: facebook/convnext-base-384-22k-1k)" in text


def test_options_parse_into_the_typed_config():
    cfg = parse_config(["--data", "d", "--epochs-t1", "3", "--no-rules", "--loss", "balanced"])
    assert (cfg.data, cfg.epochs_t1, cfg.rules, cfg.loss) == ("d", 3, False, "balanced")
    with pytest.raises(SystemExit):
        parse_config(["--data", "d", "--loss", "focal"])


def test_help_answers_without_importing_torch():
    code = ("import runpy, sys\nsys.argv = ['train', '--help']\n"
            "try:\n    runpy.run_module('model_training.train', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('torch imported' if 'torch' in sys.modules else 'no torch', file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "--epochs-t1" in result.stdout
    assert result.stderr.strip().endswith("no torch"), result.stderr[-2000:]

"""The preference-tuning config keys: validated, defaulted per loss, in --print-config and the form schema."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from forgellm.cli.main import root
from forgellm.errors import UserError
from forgellm.training.config import build_config


def test_loss_parameters_default_per_loss():
    dpo = build_config(None, {"training_type": "preference"})
    assert dpo.preference_loss == "dpo"
    assert (dpo.preference_parameter("beta"), dpo.preference_parameter("dpo_label_smoothing")) == (0.1, 0.0)
    simpo = build_config(None, {"training_type": "preference", "preference_loss": "simpo", "simpo_gamma": 1.0})
    assert (simpo.preference_parameter("beta"), simpo.preference_parameter("simpo_gamma")) == (2.0, 1.0)
    orpo = build_config(None, {"training_type": "preference", "preference_loss": "orpo", "orpo_lambda": 0.2})
    assert orpo.preference_parameter("orpo_lambda") == 0.2


@pytest.mark.parametrize(
    "values,message",
    [
        (
            {"training_type": "preference", "preference_loss": "orpo", "beta": 0.2},
            r"beta=0.2: .*beta is a parameter of preference_loss dpo or simpo, not orpo",
        ),
        (
            {"training_type": "preference", "preference_loss": "simpo", "dpo_label_smoothing": 0.1},
            r"dpo_label_smoothing is a parameter of preference_loss dpo, not simpo",
        ),
        (
            {"training_type": "preference", "orpo_lambda": 0.1},
            r"orpo_lambda is a parameter of preference_loss orpo, not dpo",
        ),
        ({"training_type": "ift", "beta": 0.1}, r"beta applies to training_type: preference, not ift"),
        ({"training_type": "preference", "dpo_label_smoothing": 0.5}, r"dpo_label_smoothing=0.5"),
        ({"training_type": "preference", "preference_loss": "kto"}, r"preference_loss='kto'"),
    ],
)
def test_a_parameter_of_another_loss_is_named(values, message):
    with pytest.raises(UserError, match=message):
        build_config(None, values)


def test_print_config_shows_the_preference_keys():
    result = CliRunner().invoke(root, ["train", "--print-config"])
    assert result.exit_code == 0, result.output
    for key in (
        "preference_loss: dpo",
        "beta: null",
        "dpo_label_smoothing: null",
        "orpo_lambda: null",
        "simpo_gamma: null",
    ):
        assert key in result.output


def test_resolved_config_round_trips():
    config = build_config(None, {"training_type": "preference", "preference_loss": "simpo", "beta": 2.5})
    import yaml

    again = build_config(None, yaml.safe_load(config.to_yaml()))
    assert again == config

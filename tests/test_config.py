import pytest

from quantbench.config import CellConfig, Repetitions, Workload, parse_scheme_list
from quantbench.errors import UsageError


def _cell(**over):
    base = dict(model={"fingerprint": "f"}, scheme="fp32", scheme_settings={}, runtime="eager",
                device="cpu", workload=Workload(1, 16, 4), repetitions=Repetitions(1, 3),
                prompt={"source": "s", "sha256": "h", "ids": [[1]]})
    base.update(over)
    return CellConfig(**base)


def test_cell_identity_is_stable_and_covers_what_changes_results():
    assert _cell().cell_id == _cell().cell_id
    assert _cell().cell_id == CellConfig.from_dict(_cell().to_dict()).cell_id
    for change in (dict(scheme="bf16"), dict(device="cuda:0"), dict(workload=Workload(1, 16, 5)),
                   dict(repetitions=Repetitions(1, 4)), dict(scheme_settings={"group_size": 32}),
                   dict(prompt={"source": "s", "sha256": "other", "ids": [[2]]})):
        assert _cell(**change).cell_id != _cell().cell_id, change
    assert _cell(baseline=True).cell_id == _cell().cell_id  # a role, not a measurement


@pytest.mark.parametrize("workload", [Workload(0, 16, 4), Workload(1, -1, 4), Workload(1, 16, 0)])
def test_non_positive_sizes_are_rejected(workload):
    with pytest.raises(UsageError, match="positive"):
        workload.validate()


def test_context_overflow_is_rejected():
    with pytest.raises(UsageError, match="exceeds the model's context of 100"):
        Workload(1, 90, 20).validate(max_context=100)


def test_scheme_list_parsing():
    # Duplicates are kept here; the run measures each once and says so (test_hardening.py).
    assert parse_scheme_list("fp32, bf16,fp32") == ["fp32", "bf16", "fp32"]
    assert parse_scheme_list(["fp32", "bf16, int8"]) == ["fp32", "bf16", "int8"]
    with pytest.raises(UsageError, match="is empty"):
        parse_scheme_list(" , ")
    with pytest.raises(UsageError, match="empty name"):
        parse_scheme_list("fp32,")

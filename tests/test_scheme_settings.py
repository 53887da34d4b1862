"""`name:key=value` settings: part of a scheme's identity, recorded, validated."""

import pytest

from conftest import TINY, export_json, quantbench
from quantbench.errors import UsageError
from quantbench.schemes import get


def test_settings_make_a_distinct_recorded_scheme():
    plain, off = get("bnb-int8"), get("bnb-int8:threshold=0")
    assert off.name == "bnb-int8:threshold=0.0" and off.base == "bnb-int8"
    assert plain.settings("cpu")["outlier_path"] is True
    assert off.settings("cpu") | {} == {**plain.settings("cpu"), "threshold": 0.0, "outlier_path": False}
    assert get("bnb-nf4:double_quant=true:blocksize=128").settings("cpu")["blocksize"] == 128
    assert get("torchao-int4wo:group=32").settings("cpu")["group"] == 32
    assert get("torchao-int4wo").settings("cpu")["group"] == 64
    assert get("torchao-int4wo").settings("cuda")["group"] == 128


@pytest.mark.parametrize("spec,needle", [
    ("bnb-int8:thresh=1", "has no setting 'thresh' (settable: threshold, quantize_head, kv)"),
    ("bnb-int8:threshold=high", "threshold must be a float"),
    ("bnb-nf4:quant_type=int3", "quant_type must be nf4 or fp4"),
    ("bnb-nf4:double_quant=maybe", "double_quant must be a bool"),
    ("torchao-int4wo:group=48", "group must be 32, 64, 128 or 256"),
    ("fp32:anything=1", "has no setting 'anything' (settable: kv)"),
    ("bnb-int8:threshold", "has no setting 'threshold'"),
])
def test_bad_settings_are_refused(spec, needle):
    with pytest.raises(UsageError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        get(spec)


def test_a_setting_reaches_the_measurement(workdir):
    proc = quantbench("run", *TINY, "--schemes", "fp32,bnb-int8,bnb-int8:threshold=0", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    records = export_json(workdir)
    assert [r["scheme"] for r in records] == ["fp32", "bnb-int8", "bnb-int8:threshold=0.0"]
    assert records[1]["scheme_settings"]["outlier_path"] is True
    assert records[2]["scheme_settings"]["outlier_path"] is False
    assert records[1]["cell_id"] != records[2]["cell_id"]
    assert all(r["status"] == "ok" for r in records)

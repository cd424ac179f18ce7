"""The worker's inherited environment: the allow-list, the operator's additions, nothing else."""

import pytest

from runtime.node.workers.errors import BadPassthrough
from runtime.node.workers.workerenv import WORKER_ENV_ALLOWLIST, check_passthrough, inherited_env

NODE_ENV = {
    "PATH": "/usr/bin", "HOME": "/root", "LANG": "C.UTF-8", "LC_ALL": "C", "TZ": "UTC",
    "OMP_NUM_THREADS": "2", "OPENBLAS_CORETYPE": "Haswell", "CUDA_VISIBLE_DEVICES": "0",
    "LLAMA_N_THREADS": "2", "FLOWCTL_TEST_RUN": "abc",
    "FLOWCTL_ADMIN_KEY": "fck_admin", "FLOWCTL_TOKEN": "t", "FLOWCTL_JOIN_TOKEN": "fjt_join",
    "FLOWCTL_HOST": "0.0.0.0", "AWS_SECRET_ACCESS_KEY": "aws", "HTTPS_PROXY": "http://u:p@proxy",
    "HF_HOME": "/cache/hf", "HF_TOKEN": "hf_secret", "REQUESTS_CA_BUNDLE": "/etc/ssl/ca.pem",
}


def test_only_the_allow_list_is_inherited():
    env = inherited_env(NODE_ENV)
    assert env == {k: NODE_ENV[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "OMP_NUM_THREADS",
                                            "OPENBLAS_CORETYPE", "CUDA_VISIBLE_DEVICES", "LLAMA_N_THREADS",
                                            "REQUESTS_CA_BUNDLE", "FLOWCTL_TEST_RUN")}
    assert "FLOWCTL_TEST_RUN" in WORKER_ENV_ALLOWLIST  # the suite's leak guard depends on it


def test_the_operator_adds_names_and_prefixes():
    env = inherited_env(NODE_ENV, check_passthrough(["HTTPS_PROXY", "HF_HOME"]))
    assert env["HTTPS_PROXY"] == "http://u:p@proxy" and env["HF_HOME"] == "/cache/hf"
    assert "HF_TOKEN" not in env
    assert "HF_TOKEN" in inherited_env(NODE_ENV, check_passthrough(["HF_*"]))


@pytest.mark.parametrize(("entry", "reason"), [
    ("FLOWCTL_TOKEN", "would pass on the node's own FLOWCTL_* settings"),
    ("FLOW*", "would pass on the node's own FLOWCTL_* settings"),
    ("*", "is not a variable name"),
    ("A-B", "is not a variable name"),
    ("", "is not a variable name"),
])
def test_bad_passthrough_entries_are_refused_with_the_entry_shown(entry, reason):
    with pytest.raises(BadPassthrough) as info:
        check_passthrough([entry])
    assert str(info.value).startswith(f"worker_env_passthrough: {entry!r} {reason}")
    assert check_passthrough(["F", "FOO_*"]) == ("F", "FOO_*")  # near FLOWCTL_, not covering it

"""The inventory's node binding: which nodes reach a QPU, validated and applied."""

from __future__ import annotations

from typing import Any

import pytest

from qubelet.inventory import ConfigError, parse_config
from qubelet.inventory.binding import for_node, is_node_local, parse_labels, reaches


def inventory(**binding: Any) -> Any:
    qpu = {
        "name": "adonis",
        "vendor": "IQM",
        "model": "Adonis",
        "qubits": 5,
        "technology": "superconducting",
        "location": "onprem",
        "backend": "fake:IQMFakeAdonis",
        **binding,
    }
    return parse_config({"version": "v1", "qpus": [qpu]}, "qpus.yaml")


@pytest.mark.parametrize(
    ("binding", "message"),
    [
        ({"nodes": []}, "qpus.yaml: qpus[0] (adonis): nodes: must be a non-empty list of node names, got []"),
        ({"nodes": ["Node_A"]}, "nodes[0]: must be a node name (DNS-1123 subdomain), got 'Node_A'"),
        ({"nodes": ["a", "a"]}, "nodes[1]: duplicate node 'a'"),
        ({"nodes": ["a"], "nodeSelector": {"x": "y"}}, "nodes: set nodes or nodeSelector, not both"),
    ],
)
def test_bad_binding_is_one_line(binding: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        inventory(**binding)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_reaches() -> None:
    one = inventory(nodes=["qpu-node-1"]).qpus[0]
    assert is_node_local(one)
    assert reaches(one, "qpu-node-1", None) is True and reaches(one, "worker-2", None) is False
    assert reaches(one, None, None) is False
    labelled = inventory(nodeSelector={"lab": "a"}).qpus[0]
    assert not is_node_local(labelled)
    assert reaches(labelled, "n", {"lab": "a", "x": "y"}) is True
    assert reaches(labelled, "n", {"lab": "b"}) is False
    assert reaches(labelled, "n", None) is None
    assert reaches(inventory().qpus[0], "anywhere", None) is True
    assert not is_node_local(inventory(nodes=["a", "b"]).qpus[0])


def test_for_node_leaves_out_what_it_cannot_decide() -> None:
    config, notes = for_node(inventory(nodeSelector={"lab": "a"}), "n")
    assert config.qpus == () and notes == [
        "adonis: bound by nodeSelector, but this node's labels are unknown (--node-labels)"
    ]
    assert for_node(inventory(nodeSelector={"lab": "a"}), "n", parse_labels("lab=a, x=y"))[0].qpus


def test_parse_labels() -> None:
    assert parse_labels("a=b,c=") == {"a": "b", "c": ""}
    with pytest.raises(ValueError, match="expected key=value"):
        parse_labels("a")

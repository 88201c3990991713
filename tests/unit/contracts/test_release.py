"""The release log's Merkle trees (RFC 9162) and canonical records: every proof of every tree up to 33 leaves
leads to its root; a proof for another index, size or leaf does not."""

from __future__ import annotations

import hashlib

import pytest

from anfang.contracts.release import (
    ReleaseProofError,
    audit_path,
    canonical_record,
    leaf_hash,
    merkle_root,
    root_from_path,
    tree,
)


def _leaves(n: int) -> list[bytes]:
    return [leaf_hash(f"record {i}".encode()) for i in range(n)]


@pytest.mark.parametrize("size", range(1, 34))
def test_every_proof_leads_to_the_root_and_no_other(size: int) -> None:
    leaves = _leaves(size)
    root, paths = tree(leaves)
    assert root == merkle_root(leaves)
    for index in range(size):
        assert paths[index] == audit_path(leaves, index)
        assert root_from_path(leaves[index], index, size, paths[index]) == root
        if size > 1:  # the same proof for a neighbour's place, or another leaf, gives another root (or none)
            assert _root_or_none(leaves[index], (index + 1) % size, size, paths[index]) != root
            assert root_from_path(leaf_hash(b"forged"), index, size, paths[index]) != root


def _root_or_none(leaf: bytes, index: int, size: int, path: list[bytes]) -> bytes | None:
    try:
        return root_from_path(leaf, index, size, path)
    except ReleaseProofError:
        return None


def test_rfc9162_hashing_of_two_leaves() -> None:
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert a == hashlib.sha256(b"\x00a").digest()
    assert merkle_root([a, b]) == hashlib.sha256(b"\x01" + a + b).digest()


def test_a_proof_of_the_wrong_length_or_index_is_refused() -> None:
    leaves = _leaves(5)
    path = audit_path(leaves, 2)
    with pytest.raises(ReleaseProofError):
        root_from_path(leaves[2], 2, 5, [*path, path[0]])
    with pytest.raises(ReleaseProofError):
        root_from_path(leaves[2], 2, 5, path[:-1])
    with pytest.raises(ReleaseProofError):
        root_from_path(leaves[2], 5, 5, path)


def test_canonical_records_ignore_key_order_whitespace_and_release() -> None:
    one = canonical_record({"b": 1, "a": {"y": "张", "x": 1.5}, "release": {"entry_id": "gov_cloud:1"}})
    assert one == canonical_record({"a": {"x": 1.5, "y": "张"}, "b": 1})
    assert one == '{"a":{"x":1.5,"y":"张"},"b":1}'.encode()

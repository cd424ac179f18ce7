import packer


def test_every_public_name_resolves():
    for name in packer.__all__:
        assert getattr(packer, name) is not None, name


def test_api_shapes_other_packages_rely_on():
    import inspect

    assert list(inspect.signature(packer.pack_dir).parameters)[:2] == ["src", "out_dir"]
    assert {"level", "signing_key", "fmt", "progress"} <= set(inspect.signature(packer.pack_dir).parameters)
    assert {"path", "sha256", "size", "manifest", "signed"} <= set(packer.PackResult.__dataclass_fields__)
    assert {"max_total_bytes", "max_file_bytes", "max_files", "max_manifest_bytes", "max_window_log"} <= set(
        packer.Limits.__dataclass_fields__)
    assert {"expected_sha256", "trusted_keys", "require_signature", "limits"} <= set(
        inspect.signature(packer.verify_bundle).parameters)

"""The Media2 WSDL shipped as package data loads without the network and is unmodified."""

from __future__ import annotations

from typing import Any

import pytest
from zeep import Client, Settings
from zeep.transports import Transport

from agent.camera.session import MEDIA2_BINDING, MEDIA2_WSDL, WSDL_DIR


class OfflineTransport(Transport):
    """Fails any load that is not a local file, as on a machine without a network."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.loaded: list[str] = []

    def load(self, url: str) -> Any:
        if "://" in url and not url.startswith("file://"):
            raise AssertionError(f"WSDL loading touched the network: {url}")
        self.loaded.append(url)
        return super().load(url)  # type: ignore[no-untyped-call]


def test_media2_wsdl_loads_offline_with_its_operations() -> None:
    transport = OfflineTransport()
    settings = Settings(strict=False)
    client = Client(str(MEDIA2_WSDL), transport=transport, settings=settings)  # type: ignore[no-untyped-call]
    assert MEDIA2_BINDING in client.wsdl.bindings
    ops = client.wsdl.bindings[MEDIA2_BINDING]._operations
    for name in (
        "GetProfiles",
        "GetStreamUri",
        "GetSnapshotUri",
        "GetVideoEncoderConfigurations",
        "GetVideoEncoderConfigurationOptions",
        "SetVideoEncoderConfiguration",
    ):
        assert name in ops
    assert any(url.endswith("onvif.xsd") for url in transport.loaded)


@pytest.mark.parametrize(
    "relative", ["ver20/media/wsdl/media.wsdl", "ver10/schema/onvif.xsd", "ver10/schema/common.xsd"]
)
def test_onvif_files_keep_their_copyright_notice(relative: str) -> None:
    head = (WSDL_DIR / relative).read_text(encoding="utf-8")[:2000]
    assert "Copyright (c) 2008" in head and "No license is granted to modify this document" in head
    assert (WSDL_DIR / "LICENSE").is_file()

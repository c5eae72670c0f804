import pytest

from gpumesh.errors import InvalidArgument, Unauthenticated
from gpumesh.identity import Wallet, challenge_text, normalize_address, recover_signer, verify_signature


def test_sign_and_recover_eip191():
    wallet = Wallet.from_hex("0x" + "11" * 32)
    # Address of private key 0x11..11 (well known test vector).
    assert wallet.address == "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A"
    text = challenge_text(wallet.address, "abc", 1)
    sig = wallet.sign_text(text)
    assert len(sig) == 65
    assert recover_signer(text, sig) == wallet.address
    verify_signature(text, sig, wallet.address.lower())


def test_forged_or_malformed_signatures_are_unauthenticated():
    alice, mallory = Wallet.generate(), Wallet.generate()
    text = "hello"
    with pytest.raises(Unauthenticated, match="not"):
        verify_signature(text, mallory.sign_text(text), alice.address)
    with pytest.raises(Unauthenticated):
        verify_signature(text + "!", alice.sign_text(text), alice.address)
    with pytest.raises(Unauthenticated, match="65 bytes"):
        verify_signature(text, b"\x00" * 10, alice.address)


def test_key_file_is_created_private_and_reloaded(tmp_path):
    path = tmp_path / "k" / "wallet.key"
    w1 = Wallet.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert Wallet.load_or_create(path).address == w1.address
    assert w1.private_key.hex() not in repr(w1)


def test_normalize_address_rejects_garbage():
    with pytest.raises(InvalidArgument) as err:
        normalize_address("0x1234")
    assert err.value.field == "address"

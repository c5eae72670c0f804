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


def test_signatures_and_addresses_equal_eth_accounts():
    """The libsecp256k1 fast path signs the same bytes as eth_account, derives the same address,
    and accepts and refuses exactly the signatures eth_account does (a high s too)."""
    import secrets

    from eth_account import Account
    from eth_account.messages import encode_defunct

    from gpumesh.errors import Unauthenticated
    from gpumesh.identity import _SECP256K1_N, Wallet, recover_signer

    def eth(text: str, sig: bytes) -> str:
        try:
            return Account.recover_message(encode_defunct(text=text), signature=sig)
        except Exception:
            return "refused"

    def ours(text: str, sig: bytes) -> str:
        try:
            return recover_signer(text, sig)
        except Unauthenticated:
            return "refused"

    for i in range(20):
        wallet, text = Wallet.generate(), f"gpumesh request {i}\n" + "é" * i
        sig = wallet.sign_text(text)
        assert sig == bytes(Account.sign_message(encode_defunct(text=text), private_key=wallet.private_key).signature)
        assert wallet.address == Account.from_key(wallet.private_key).address == recover_signer(text, sig)
        high_s = sig[:32] + (_SECP256K1_N - int.from_bytes(sig[32:64], "big")).to_bytes(32, "big") \
            + bytes([55 - sig[64]])  # the same signature with s and the parity flipped
        assert ours(text, high_s) == eth(text, high_s) == wallet.address
        for bad in (sig[:64] + b"\x1d", bytes(65), b"\xff" * 64 + b"\x1b", secrets.token_bytes(64) + b"\x1c",
                    sig[:64] + b"\x00", sig[:10] + bytes([sig[10] ^ 1]) + sig[11:]):
            assert ours(text, bad) == eth(text, bad)

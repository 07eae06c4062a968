"""ComputeCredit (CCR): role-gated capped minting and EIP-2612 permit, on Ape's in-process chain."""

from __future__ import annotations

import ape
import pytest
from eth_account import Account
from eth_utils import keccak

MAX_SUPPLY = 1_000_000_000 * 10**18
MINTER_ROLE = keccak(text="MINTER_ROLE")
ZERO_ADDRESS = "0x" + "00" * 20

# Every module-scoped fixture from the first test on, so Ape's snapshot isolation never rebases.
pytestmark = pytest.mark.usefixtures("admin", "stranger", "spender", "holder", "credit")


@pytest.fixture(scope="module")
def admin(accounts):
    return accounts[0]


@pytest.fixture(scope="module")
def stranger(accounts):
    return accounts[1]


@pytest.fixture(scope="module")
def spender(accounts):
    return accounts[2]


@pytest.fixture(scope="module")
def credit(project, admin):
    return admin.deploy(project.ComputeCredit, admin, MAX_SUPPLY)


@pytest.fixture(scope="module")
def holder():
    """An account we hold the key of (permits are signed off-chain with eth-account)."""
    return Account.create()


@pytest.fixture
def sign_permit(chain, credit, holder):
    def sign(spender, value, *, deadline=None, nonce=None):
        deadline = chain.pending_timestamp + 3600 if deadline is None else deadline
        nonce = credit.nonces(holder.address) if nonce is None else nonce
        signed = Account.sign_typed_data(
            holder.key,
            domain_data={
                "name": "Compute Credit",
                "version": "1",
                "chainId": chain.chain_id,
                "verifyingContract": credit.address,
            },
            message_types={
                "Permit": [
                    {"name": "owner", "type": "address"},
                    {"name": "spender", "type": "address"},
                    {"name": "value", "type": "uint256"},
                    {"name": "nonce", "type": "uint256"},
                    {"name": "deadline", "type": "uint256"},
                ]
            },
            message_data={
                "owner": holder.address,
                "spender": spender.address,
                "value": value,
                "nonce": nonce,
                "deadline": deadline,
            },
        )
        return deadline, signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big")

    return sign


def test_deploy__admin__holds_admin_and_minter_roles(credit, admin):
    assert (credit.name(), credit.symbol(), credit.decimals()) == ("Compute Credit", "CCR", 18)
    assert credit.cap() == MAX_SUPPLY
    assert credit.totalSupply() == 0
    assert credit.hasRole(credit.DEFAULT_ADMIN_ROLE(), admin)
    assert credit.hasRole(MINTER_ROLE, admin)
    assert credit.MINTER_ROLE() == MINTER_ROLE


def test_mint__by_minter__credits_recipient_and_emits(credit, admin, stranger):
    tx = credit.mint(stranger, 5 * 10**18, sender=admin)
    assert credit.balanceOf(stranger) == 5 * 10**18
    assert credit.totalSupply() == 5 * 10**18
    assert tx.events.filter(credit.CreditsMinted) == [
        credit.CreditsMinted(minter=admin, to=stranger, amount=5 * 10**18)
    ]


def test_mint__by_granted_minter__succeeds(credit, admin, stranger):
    credit.grantRole(MINTER_ROLE, stranger, sender=admin)
    credit.mint(stranger, 1, sender=stranger)
    assert credit.balanceOf(stranger) == 1


def test_mint__without_minter_role__reverts_unauthorized(credit, stranger):
    with ape.reverts(credit.AccessControlUnauthorizedAccount, account=stranger.address, neededRole=MINTER_ROLE):
        credit.mint(stranger, 1, sender=stranger)


def test_mint__zero_amount__reverts_invalid_mint(credit, admin, stranger):
    with ape.reverts(credit.ComputeCreditInvalidMint, to=stranger.address, amount=0):
        credit.mint(stranger, 0, sender=admin)


def test_mint__zero_address__reverts_invalid_mint(credit, admin):
    with ape.reverts(credit.ComputeCreditInvalidMint, to=ZERO_ADDRESS, amount=1):
        credit.mint(ZERO_ADDRESS, 1, sender=admin)


def test_mint__up_to_cap__succeeds_then_one_more_reverts_exceeded_cap(credit, admin, stranger):
    credit.mint(stranger, MAX_SUPPLY, sender=admin)
    assert credit.totalSupply() == MAX_SUPPLY
    with ape.reverts(credit.ERC20ExceededCap, increasedSupply=MAX_SUPPLY + 1, cap=MAX_SUPPLY):
        credit.mint(stranger, 1, sender=admin)


def test_permit__valid_signature__sets_allowance_without_owner_tx(credit, admin, holder, spender, sign_permit):
    credit.mint(holder.address, 100, sender=admin)
    deadline, v, r, s = sign_permit(spender, 60)
    credit.permit(holder.address, spender, 60, deadline, v, r, s, sender=spender)
    assert credit.allowance(holder.address, spender) == 60
    assert credit.nonces(holder.address) == 1
    credit.transferFrom(holder.address, spender, 60, sender=spender)
    assert credit.balanceOf(spender) == 60
    assert credit.balanceOf(holder.address) == 40


def test_permit__past_deadline__reverts_expired_signature(chain, credit, holder, spender, sign_permit):
    deadline = chain.pending_timestamp - 1
    deadline, v, r, s = sign_permit(spender, 60, deadline=deadline)
    with ape.reverts(credit.ERC2612ExpiredSignature, deadline=deadline):
        credit.permit(holder.address, spender, 60, deadline, v, r, s, sender=spender)


def test_permit__replayed_signature__reverts_invalid_signer(credit, holder, spender, sign_permit):
    deadline, v, r, s = sign_permit(spender, 60)
    credit.permit(holder.address, spender, 60, deadline, v, r, s, sender=spender)
    # The nonce moved on, so the same signature now recovers to some other address.
    with ape.reverts(credit.ERC2612InvalidSigner):
        credit.permit(holder.address, spender, 60, deadline, v, r, s, sender=spender)
    assert credit.nonces(holder.address) == 1


def test_permit__signed_for_other_value__reverts_invalid_signer(credit, holder, spender, sign_permit):
    deadline, v, r, s = sign_permit(spender, 60)
    with ape.reverts(credit.ERC2612InvalidSigner):
        credit.permit(holder.address, spender, 61, deadline, v, r, s, sender=spender)

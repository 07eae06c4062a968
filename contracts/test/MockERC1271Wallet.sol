// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

/// @title MockERC1271Wallet
/// @notice Test-only smart-contract wallet: an ERC-1271 signature is valid when its EOA owner
///         signed the digest. `setMagicValue` lets a test make it answer with a wrong magic value,
///         and `execute` lets the owner act as the wallet (approve, deposit, stake, cancel).
contract MockERC1271Wallet is IERC1271 {
    /// @notice Thrown when someone other than the owner calls `execute` or `setMagicValue`.
    error MockERC1271WalletNotOwner(address caller);

    address public immutable owner;
    bytes4 public magicValue = IERC1271.isValidSignature.selector;

    constructor(address owner_) {
        owner = owner_;
    }

    modifier onlyOwner() {
        if (msg.sender != owner) revert MockERC1271WalletNotOwner(msg.sender);
        _;
    }

    /// @notice Makes `isValidSignature` answer `value` for a valid owner signature (0x1626ba7e is correct).
    function setMagicValue(bytes4 value) external onlyOwner {
        magicValue = value;
    }

    /// @notice Calls `target` as the wallet, bubbling up any revert.
    function execute(address target, bytes calldata data) external onlyOwner returns (bytes memory result) {
        bool ok;
        (ok, result) = target.call(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(result, 0x20), mload(result))
            }
        }
    }

    /// @inheritdoc IERC1271
    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        (address signer, ECDSA.RecoverError error,) = ECDSA.tryRecoverCalldata(hash, signature);
        if (error == ECDSA.RecoverError.NoError && signer == owner) return magicValue;
        return 0xffffffff;
    }
}

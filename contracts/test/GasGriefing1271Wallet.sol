// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title GasGriefing1271Wallet
/// @notice Test-only contract "wallet" whose ERC-1271 check burns every unit of gas it is given
///         (INVALID consumes all gas of the frame), the way a griefer would answer a
///         SignatureChecker staticcall. An order naming it as signer costs nothing to make.
contract GasGriefing1271Wallet {
    function isValidSignature(bytes32, bytes calldata) external pure returns (bytes4) {
        assembly {
            invalid()
        }
    }
}

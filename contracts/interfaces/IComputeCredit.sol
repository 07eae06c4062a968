// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title ComputeCredit interface
/// @notice Errors and events of the marketplace's reward token.
interface IComputeCredit {
    /// @notice Thrown when a mint targets the zero address or mints nothing.
    error ComputeCreditInvalidMint(address to, uint256 amount);

    /// @notice Emitted when a minter issues new credits (e.g. to fund a reward pool).
    event CreditsMinted(address indexed minter, address indexed to, uint256 amount);

    /// @notice Mints `amount` credits to `to`; only accounts holding MINTER_ROLE.
    function mint(address to, uint256 amount) external;
}

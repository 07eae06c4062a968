// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Capped} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Capped.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {IComputeCredit} from "./interfaces/IComputeCredit.sol";

/// @title ComputeCredit (CCR)
/// @notice The marketplace's reward token: sponsors fund RewardPool epochs with it and providers
///         earn it for delivered GPU-hours. ERC-20 with EIP-2612 permit so deposits need no
///         separate approval transaction, and a hard supply cap so minting can never dilute
///         holders beyond what was announced.
contract ComputeCredit is ERC20, ERC20Permit, ERC20Capped, AccessControl, IComputeCredit {
    /// @notice Role allowed to mint new credits (granted by the admin, e.g. to a treasury).
    bytes32 public constant MINTER_ROLE = keccak256("MINTER_ROLE");

    // ───────────────────────────── constructor ─────────────────────────────

    constructor(address admin, uint256 maxSupply)
        ERC20("Compute Credit", "CCR")
        ERC20Permit("Compute Credit")
        ERC20Capped(maxSupply)
    {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(MINTER_ROLE, admin);
    }

    // ───────────────────────────── external ─────────────────────────────

    /// @inheritdoc IComputeCredit
    function mint(address to, uint256 amount) external onlyRole(MINTER_ROLE) {
        if (to == address(0) || amount == 0) revert ComputeCreditInvalidMint(to, amount);
        _mint(to, amount);
        emit CreditsMinted(msg.sender, to, amount);
    }

    // ───────────────────────────── internal ─────────────────────────────

    /// @dev ERC20Capped enforces the cap on every balance update.
    function _update(address from, address to, uint256 value) internal override(ERC20, ERC20Capped) {
        super._update(from, to, value);
    }
}

// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title FeeOnTransferToken
/// @notice Test-only ERC-20 that burns 1 % of every transfer (mints and burns are exempt). The
///         fee is rounded down, so the recipient receives value - floor(value × 1 %), never less.
///         Never deploy outside tests.
contract FeeOnTransferToken is ERC20 {
    uint256 public constant FEE_BPS = 100; // 1 %
    uint256 private constant BPS = 10_000;

    constructor() ERC20("Fee On Transfer Token", "FOT") {}

    /// @notice Open faucet (test token).
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice The burn a transfer of `value` pays (rounded down).
    function feeOn(uint256 value) public pure returns (uint256) {
        return value * FEE_BPS / BPS;
    }

    function _update(address from, address to, uint256 value) internal override {
        if (from == address(0) || to == address(0)) {
            super._update(from, to, value);
            return;
        }
        uint256 fee = feeOn(value);
        if (fee != 0) super._update(from, address(0), fee);
        super._update(from, to, value - fee);
    }
}

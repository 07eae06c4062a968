// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

/// @title MockStablecoin
/// @notice Devnet/test settlement token (mUSDC with 6 decimals, mDAI with 18) with a public
///         faucet. Never deploy to a real network: anyone can mint.
contract MockStablecoin is ERC20, ERC20Permit {
    /// @notice Thrown when a faucet mint asks for more than the per-call limit.
    error MockStablecoinFaucetLimit(uint256 requested, uint256 limit);

    /// @notice Emitted when the faucet mints.
    event FaucetMinted(address indexed to, uint256 amount);

    uint8 private immutable _decimals;
    uint256 private immutable _faucetLimit;

    constructor(string memory name_, string memory symbol_, uint8 decimals_)
        ERC20(name_, symbol_)
        ERC20Permit(name_)
    {
        _decimals = decimals_;
        // One million whole tokens per call keeps test setups short but bounds typos.
        _faucetLimit = 1_000_000 * 10 ** decimals_;
    }

    function decimals() public view override returns (uint8) {
        return _decimals;
    }

    /// @notice Mints up to one million whole tokens to `to`.
    function mint(address to, uint256 amount) external {
        if (amount > _faucetLimit) revert MockStablecoinFaucetLimit(amount, _faucetLimit);
        _mint(to, amount);
        emit FaucetMinted(to, amount);
    }
}

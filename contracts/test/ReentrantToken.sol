// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";

/// @title ReentrantToken
/// @notice Test-only hostile ERC-20. During a transfer or transferFrom, before any balance moves
///         (like an ERC-777 `tokensToSend` hook), it makes one armed call back into a target, e.g.
///         `ComputeMarket.withdraw` while the market is paying it out. It can also act as an
///         account itself (`execute`), so the reentering caller owns a real vault balance or stake.
///         Never deploy outside tests.
contract ReentrantToken is ERC20 {
    /// @notice Thrown when someone other than the deployer arms the hook or executes a call.
    error ReentrantTokenNotOwner(address caller);

    /// @notice Emitted for every callback the hook made, with the callee's outcome.
    event ReentryAttempted(address indexed target, bytes4 indexed selector, bool success, bytes result);

    address public immutable owner;

    address private _target;
    bytes private _data;
    bool private _bubble;
    /// @notice True while a callback waits for the next transfer.
    bool public armed;
    /// @notice How many callbacks the hook has made.
    uint256 public reentries;
    bool public lastSuccess;
    bytes public lastResult;

    modifier onlyOwner() {
        if (msg.sender != owner) revert ReentrantTokenNotOwner(msg.sender);
        _;
    }

    constructor() ERC20("Reentrant Token", "REENT") {
        owner = msg.sender;
    }

    /// @notice Open faucet (test token).
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Arms one callback: on the next transfer the token calls `target` with `data`.
    ///         With `bubble`, a failing callback reverts the whole transfer with the callee's error;
    ///         otherwise the outcome is recorded (`lastSuccess`, `lastResult`) and the transfer goes on.
    function arm(address target, bytes calldata data, bool bubble) external onlyOwner {
        _target = target;
        _data = data;
        _bubble = bubble;
        armed = true;
    }

    /// @notice The token acts as an account: calls `target` with `data` as msg.sender, bubbling reverts.
    function execute(address target, bytes calldata data) external onlyOwner returns (bytes memory) {
        return Address.functionCall(target, data);
    }

    function _update(address from, address to, uint256 value) internal override {
        if (armed && from != address(0) && to != address(0)) {
            armed = false; // one shot, so the callback's own transfers do not recurse
            bytes memory data = _data;
            (bool success, bytes memory result) = _target.call(data);
            ++reentries;
            lastSuccess = success;
            lastResult = result;
            emit ReentryAttempted(_target, bytes4(data), success, result);
            if (!success && _bubble) {
                assembly ("memory-safe") {
                    revert(add(result, 0x20), mload(result))
                }
            }
        }
        super._update(from, to, value);
    }
}

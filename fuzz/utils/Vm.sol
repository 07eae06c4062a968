// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @notice The few Foundry cheatcodes the invariant fuzzing uses, declared here so that nothing
///         outside this repository (forge-std) is needed. Signatures as in Foundry's cheatcode spec.
interface Vm {
    function warp(uint256 newTimestamp) external;
    function prank(address msgSender) external;
    function startPrank(address msgSender) external;
    function stopPrank() external;
    function addr(uint256 privateKey) external pure returns (address);
    function sign(uint256 privateKey, bytes32 digest) external pure returns (uint8 v, bytes32 r, bytes32 s);
    function label(address account, string calldata newLabel) external;
    function writeLine(string calldata path, string calldata data) external;
    function toString(uint256 value) external pure returns (string memory);
    function envOr(string calldata name, string calldata defaultValue) external view returns (string memory);
}

/// @dev The cheatcode address: uint160(uint256(keccak256("hevm cheat code"))).
address constant VM_ADDRESS = 0x7109709ECfa91a80626fF3989D68f67F5b1DD12D;

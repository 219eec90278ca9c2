// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Multicall3
/// @notice The `aggregate3` entry point of the canonical Multicall3 (same selector, same ABI),
/// so that the reconciler's batched views can be tested on anvil, which has none deployed.
/// Tests only; it holds no state. A failing call reverts with a string, as the canonical one
/// does, so that this contract declares no custom error.
contract Multicall3 {
    /// @notice One call: `target.call(callData)`; with `allowFailure` false a failure reverts all.
    struct Call3 {
        address target;
        bool allowFailure;
        bytes callData;
    }

    /// @notice The outcome of one call.
    struct Result {
        bool success;
        bytes returnData;
    }

    /// @notice Runs `calls` in order in one transaction (or one `eth_call`).
    /// @param calls The calls.
    /// @return returnData One result per call, in order.
    function aggregate3(Call3[] calldata calls) external payable returns (Result[] memory returnData) {
        uint256 length = calls.length;
        returnData = new Result[](length);
        for (uint256 i; i < length; ++i) {
            Call3 calldata c = calls[i];
            (bool ok, bytes memory ret) = c.target.call(c.callData);
            if (!ok && !c.allowFailure) {
                revert("Multicall3: call failed");
            }
            returnData[i] = Result(ok, ret);
        }
    }
}

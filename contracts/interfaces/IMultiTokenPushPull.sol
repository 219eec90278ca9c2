// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice One credit of `amount` tokens to `user` inside a push batch.
/// @dev Shared by MultiTokenPushPull, ProductBank and the EIP-712 `Reward` type.
struct Reward {
    address user;
    uint256 amount;
}

/// @title The push side of MultiTokenPushPull, as seen by a ProductBank.
interface IMultiTokenPushPull {
    /// @notice Credits every entry of `rewards` in `token`, pulling their sum from the caller.
    /// @param token The ERC-20 being credited.
    /// @param rewards The (user, amount) entries; none may have a zero user or a zero amount.
    function pushRewards(address token, Reward[] calldata rewards) external;

    /// @notice Allows `pusher` to call `pushRewards`.
    /// @param pusher The account to authorise.
    function authorizePusher(address pusher) external;
}

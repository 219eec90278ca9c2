// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title LogEmitter
/// @notice Emits arbitrary raw logs (for hostile and undecodable log tests) and bulk runs of
/// well-formed events (for load tests). Tests only; it holds no state.
contract LogEmitter {
    /// @notice Same shape as MultiTokenPushPull's event, for bulk emission from another address.
    /// @param token The token.
    /// @param user The user.
    /// @param emitter The emitter.
    /// @param amount The amount.
    event RewardAdded(
        address indexed token, address indexed user, address indexed emitter, uint256 amount
    );

    /// @notice Same topic0 as MultiTokenPushPull's `RewardClaimed(address,address,uint256)` but
    /// a different indexed layout (only `user` indexed), like several real contracts.
    /// @param user The user.
    /// @param token The token.
    /// @param amount The amount.
    event RewardClaimed(address indexed user, address token, uint256 amount);

    /// @notice `nTopics` is above 4 or more than `topics` holds.
    error InvalidTopicCount(uint256 nTopics, uint256 provided);

    /// @notice Emits one log with the first `nTopics` of `topics` and `data`, verbatim.
    /// @param nTopics 0..4.
    /// @param topics At least `nTopics` topics.
    /// @param data The log data.
    function emitRaw(uint8 nTopics, bytes32[] calldata topics, bytes calldata data) external {
        _emitRaw(nTopics, topics, data);
    }

    /// @notice Emits the same raw log `count` times.
    /// @param nTopics 0..4.
    /// @param topics At least `nTopics` topics.
    /// @param data The log data.
    /// @param count How many copies.
    function emitRawMany(
        uint8 nTopics,
        bytes32[] calldata topics,
        bytes calldata data,
        uint256 count
    ) external {
        for (uint256 i; i < count; ++i) {
            _emitRaw(nTopics, topics, data);
        }
    }

    /// @notice Emits `count` well-formed `RewardAdded` events for users
    /// `address(firstUser)`, `address(firstUser + 1)`, ... with amounts `amount`, `amount + 1`, ...
    /// @param token The token topic.
    /// @param emitter The emitter topic.
    /// @param firstUser The first user, as a number.
    /// @param amount The first amount.
    /// @param count How many events.
    function emitRewardsAdded(
        address token,
        address emitter,
        uint160 firstUser,
        uint256 amount,
        uint256 count
    ) external {
        for (uint256 i; i < count; ++i) {
            emit RewardAdded(token, address(firstUser + uint160(i)), emitter, amount + i);
        }
    }

    /// @notice Emits the look-alike `RewardClaimed` (one indexed field instead of two).
    /// @param user The user.
    /// @param token The token.
    /// @param amount The amount.
    function emitForeignRewardClaimed(address user, address token, uint256 amount) external {
        emit RewardClaimed(user, token, amount);
    }

    function _emitRaw(uint8 nTopics, bytes32[] calldata topics, bytes calldata data) private {
        if (nTopics > 4 || topics.length < nTopics) {
            revert InvalidTopicCount(nTopics, topics.length);
        }
        bytes memory buf = data;
        bytes32 t0 = nTopics > 0 ? topics[0] : bytes32(0);
        bytes32 t1 = nTopics > 1 ? topics[1] : bytes32(0);
        bytes32 t2 = nTopics > 2 ? topics[2] : bytes32(0);
        bytes32 t3 = nTopics > 3 ? topics[3] : bytes32(0);
        assembly ("memory-safe") {
            let ptr := add(buf, 32)
            let len := mload(buf)
            switch nTopics
            case 0 { log0(ptr, len) }
            case 1 { log1(ptr, len, t0) }
            case 2 { log2(ptr, len, t0, t1) }
            case 3 { log3(ptr, len, t0, t1, t2) }
            default { log4(ptr, len, t0, t1, t2, t3) }
        }
    }
}

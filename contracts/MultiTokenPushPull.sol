// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

import {IMultiTokenPushPull, Reward} from "./interfaces/IMultiTokenPushPull.sol";

/// @title MultiTokenPushPull
/// @notice The one reward ledger per chain: authorised pushers (ProductBanks) credit users in any
/// ERC-20, and each user pulls what is pending to them.
/// @dev Invariant: for every token, the sum of pending amounts equals `getTotalPending(token)`,
/// and the contract's balance of the token is at least that total.
contract MultiTokenPushPull is IMultiTokenPushPull, AccessControl, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice May authorise and revoke pushers (granted to the ProductBankFactory).
    bytes32 public constant PUSHER_MANAGER_ROLE = keccak256("PUSHER_MANAGER_ROLE");

    mapping(address token => mapping(address user => uint256)) private _pending;
    mapping(address token => uint256) private _totalPending;
    mapping(address account => bool) private _pushers;

    /// @notice Emitted once per entry of a push: `user` may now pull `amount` more of `token`.
    /// @param token The ERC-20 credited.
    /// @param user The beneficiary.
    /// @param emitter The pusher (a ProductBank) that paid for the credit.
    /// @param amount The amount credited.
    event RewardAdded(
        address indexed token, address indexed user, address indexed emitter, uint256 amount
    );

    /// @notice Emitted when `user` pulled everything pending to them in `token`.
    /// @param token The ERC-20 paid out.
    /// @param user The claimer and recipient.
    /// @param amount The amount transferred.
    event RewardClaimed(address indexed token, address indexed user, uint256 amount);

    /// @notice Emitted when `pusher` may push rewards.
    /// @param pusher The account authorised.
    event PusherAuthorized(address indexed pusher);

    /// @notice Emitted when `pusher` may no longer push rewards.
    /// @param pusher The account revoked.
    event PusherRevoked(address indexed pusher);

    /// @notice The caller (or the account to revoke) is not an authorised pusher.
    error NotAuthorizedPusher(address account);
    /// @notice The account is already an authorised pusher.
    error PusherAlreadyAuthorized(address account);
    /// @notice A token, user or pusher address is zero.
    error ZeroAddress();
    /// @notice A reward entry has a zero amount.
    error ZeroAmount();
    /// @notice A push batch or a token list is empty.
    error EmptyBatch();
    /// @notice The token moved a different amount than asked (fee-on-transfer tokens are refused).
    error TransferAmountMismatch(uint256 expected, uint256 received);
    /// @notice The caller has nothing pending in `token` (or in any of the tokens given).
    error NothingToClaim(address token, address user);

    /// @param admin Receives DEFAULT_ADMIN_ROLE and PUSHER_MANAGER_ROLE.
    constructor(address admin) {
        if (admin == address(0)) revert ZeroAddress();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(PUSHER_MANAGER_ROLE, admin);
    }

    /// @notice Credits every entry of `rewards` in `token` and pulls their sum from the caller.
    /// @dev Caller must be an authorised pusher and must have approved the sum. The received
    /// amount is checked by balance delta. Emits one `RewardAdded` per entry, in order.
    /// @param token The ERC-20 being credited (non-zero).
    /// @param rewards The (user, amount) entries (non-empty; no zero user, no zero amount).
    function pushRewards(address token, Reward[] calldata rewards)
        external
        override
        nonReentrant
    {
        if (!_pushers[msg.sender]) revert NotAuthorizedPusher(msg.sender);
        if (token == address(0)) revert ZeroAddress();
        uint256 n = rewards.length;
        if (n == 0) revert EmptyBatch();
        uint256 total;
        for (uint256 i; i < n; ++i) {
            if (rewards[i].user == address(0)) revert ZeroAddress();
            if (rewards[i].amount == 0) revert ZeroAmount();
            total += rewards[i].amount;
        }
        uint256 before = IERC20(token).balanceOf(address(this));
        IERC20(token).safeTransferFrom(msg.sender, address(this), total);
        uint256 received = IERC20(token).balanceOf(address(this)) - before;
        if (received != total) revert TransferAmountMismatch(total, received);
        _totalPending[token] += total;
        for (uint256 i; i < n; ++i) {
            _pending[token][rewards[i].user] += rewards[i].amount;
            emit RewardAdded(token, rewards[i].user, msg.sender, rewards[i].amount);
        }
    }

    /// @notice Transfers everything pending to the caller in `token`.
    /// @dev Reverts `NothingToClaim` when nothing is pending. Emits `RewardClaimed`.
    /// @param token The ERC-20 to claim.
    function pullReward(address token) external nonReentrant {
        if (_pull(token) == 0) revert NothingToClaim(token, msg.sender);
    }

    /// @notice Transfers everything pending to the caller in each of `tokens`.
    /// @dev Tokens with nothing pending (and repeats) are skipped; reverts `NothingToClaim` with
    /// token zero when none of them had anything. Emits one `RewardClaimed` per token paid.
    /// @param tokens The ERC-20s to claim (non-empty).
    function pullRewards(address[] calldata tokens) external nonReentrant {
        if (tokens.length == 0) revert EmptyBatch();
        uint256 paid;
        for (uint256 i; i < tokens.length; ++i) {
            if (_pull(tokens[i]) != 0) ++paid;
        }
        if (paid == 0) revert NothingToClaim(address(0), msg.sender);
    }

    /// @notice Allows `pusher` to call `pushRewards`. Emits `PusherAuthorized`.
    /// @param pusher The account to authorise (non-zero, not already authorised).
    function authorizePusher(address pusher) external override onlyRole(PUSHER_MANAGER_ROLE) {
        if (pusher == address(0)) revert ZeroAddress();
        if (_pushers[pusher]) revert PusherAlreadyAuthorized(pusher);
        _pushers[pusher] = true;
        emit PusherAuthorized(pusher);
    }

    /// @notice Stops `pusher` from pushing; what it already pushed stays claimable.
    /// Emits `PusherRevoked`.
    /// @param pusher A currently authorised pusher.
    function revokePusher(address pusher) external onlyRole(PUSHER_MANAGER_ROLE) {
        if (!_pushers[pusher]) revert NotAuthorizedPusher(pusher);
        _pushers[pusher] = false;
        emit PusherRevoked(pusher);
    }

    /// @notice Whether `account` may call `pushRewards`.
    /// @param account The account to check.
    /// @return True when authorised.
    function isAuthorizedPusher(address account) external view returns (bool) {
        return _pushers[account];
    }

    /// @notice The amount `user` can pull in `token` now.
    /// @param token The ERC-20.
    /// @param user The beneficiary.
    /// @return The pending amount.
    function getPendingAmount(address token, address user) external view returns (uint256) {
        return _pending[token][user];
    }

    /// @notice The sum of all users' pending amounts in `token`.
    /// @param token The ERC-20.
    /// @return The total pending amount.
    function getTotalPending(address token) external view returns (uint256) {
        return _totalPending[token];
    }

    function _pull(address token) private returns (uint256 amount) {
        amount = _pending[token][msg.sender];
        if (amount == 0) return 0;
        _pending[token][msg.sender] = 0;
        _totalPending[token] -= amount;
        IERC20(token).safeTransfer(msg.sender, amount);
        emit RewardClaimed(token, msg.sender, amount);
    }
}

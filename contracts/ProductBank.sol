// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";

import {IMultiTokenPushPull, Reward} from "./interfaces/IMultiTokenPushPull.sol";
import {IProductBankFactory} from "./interfaces/IProductBankFactory.sol";

/// @title ProductBank
/// @notice Holds one product's reward funds and pushes signed reward batches into the
/// MultiTokenPushPull. Anyone may submit a batch; the authority is an EIP-712 signature by a
/// holder of DISTRIBUTOR_ROLE over
/// `RewardBatch(bytes32 campaignId,address token,Reward[] rewards,bytes32 nonce,uint256 deadline)`
/// with `Reward(address user,uint256 amount)`, domain name "ProductBank", version "1", the chain
/// id and this bank's address.
/// @dev Budgets are kept per (campaignId, token). A budget is allocated with a number: any value
/// below `UNCAPPED` (= type(uint256).max) is a cap that each push spends down and that stays a
/// cap when it reaches 0 (further pushes revert `InsufficientBudget`); `UNCAPPED` means no limit
/// and is never decremented. Allocation overwrites the remaining budget. A campaign is active for
/// a token once a budget was allocated for that pair, until the campaign is deactivated, which
/// is final for all its tokens. Nonces are unordered: any unused bytes32 is accepted once.
contract ProductBank is AccessControl, ReentrancyGuard, EIP712 {
    using SafeERC20 for IERC20;

    /// @notice Signers of reward batches.
    bytes32 public constant DISTRIBUTOR_ROLE = keccak256("DISTRIBUTOR_ROLE");
    /// @notice The budget value meaning "no cap".
    uint256 public constant UNCAPPED = type(uint256).max;
    /// @notice The largest batch `pushRewards` accepts.
    uint256 public constant MAX_BATCH_SIZE = 100;
    /// @notice EIP-712 type hash of `Reward(address user,uint256 amount)`.
    bytes32 public constant REWARD_TYPEHASH = keccak256("Reward(address user,uint256 amount)");
    /// @notice EIP-712 type hash of `RewardBatch` (with the referenced `Reward` type appended).
    bytes32 public constant REWARD_BATCH_TYPEHASH = keccak256(
        "RewardBatch(bytes32 campaignId,address token,Reward[] rewards,bytes32 nonce,uint256 deadline)"
        "Reward(address user,uint256 amount)"
    );

    /// @notice The product this bank serves (the CREATE2 salt used by the factory).
    bytes32 public immutable productId;
    /// @notice The factory that deployed this bank.
    address public immutable factory;
    /// @notice The MultiTokenPushPull this bank pushes into.
    IMultiTokenPushPull public immutable pushPull;

    struct Budget {
        uint256 remaining;
        uint256 spent;
        bool allocated;
    }

    mapping(bytes32 campaignId => mapping(address token => Budget)) private _budgets;
    mapping(bytes32 campaignId => bool) private _deactivated;
    mapping(bytes32 nonce => bool) private _usedNonces;

    /// @notice Emitted when `depositor` added `amount` of `token` (the amount actually received).
    /// @param token The ERC-20 deposited.
    /// @param depositor The account the tokens came from.
    /// @param amount The amount received.
    event FundsDeposited(address indexed token, address indexed depositor, uint256 amount);

    /// @notice Emitted when the owner took `amount` of `token` out to `recipient`.
    /// @param token The ERC-20 withdrawn.
    /// @param recipient The receiver.
    /// @param amount The amount sent.
    event FundsWithdrawn(address indexed token, address indexed recipient, uint256 amount);

    /// @notice Emitted when the budget of (campaignId, token) was set to `budget`.
    /// @param campaignId The campaign.
    /// @param token The ERC-20 the budget is in.
    /// @param budget The new remaining budget; `UNCAPPED` (2**256-1) means no cap.
    event CampaignBudgetAllocated(bytes32 indexed campaignId, address indexed token, uint256 budget);

    /// @notice Emitted when a campaign was deactivated for good, for all tokens.
    /// @param campaignId The campaign.
    event CampaignDeactivated(bytes32 indexed campaignId);

    /// @notice Emitted for each accepted batch; confirms the batch identified by `nonce`.
    /// @param campaignId The campaign charged.
    /// @param token The ERC-20 pushed.
    /// @param nonce The batch nonce, now used.
    /// @param totalAmount The sum of the batch's amounts.
    /// @param count The number of entries in the batch.
    event RewardsPushed(
        bytes32 indexed campaignId,
        address indexed token,
        bytes32 indexed nonce,
        uint256 totalAmount,
        uint256 count
    );

    /// @notice The batch nonce was already used (the batch was pushed before).
    error NonceAlreadyUsed(bytes32 nonce);
    /// @notice The batch's deadline is in the past.
    error DeadlineExpired(uint256 deadline, uint256 timestamp);
    /// @notice The signature is malformed or its signer does not hold DISTRIBUTOR_ROLE.
    error InvalidSignature();
    /// @notice A capped budget has less left than the batch needs.
    error InsufficientBudget(uint256 remaining, uint256 required);
    /// @notice The bank holds less of the token than needed.
    error InsufficientBalance(uint256 available, uint256 required);
    /// @notice No budget was allocated for (campaignId, token), or the campaign was deactivated.
    error CampaignNotActive(bytes32 campaignId, address token);
    /// @notice The campaign was already deactivated.
    error CampaignAlreadyDeactivated(bytes32 campaignId);
    /// @notice The batch is empty or longer than `MAX_BATCH_SIZE`.
    error InvalidBatchSize(uint256 size, uint256 max);
    /// @notice A token, user or recipient address is zero.
    error ZeroAddress();
    /// @notice An amount or a budget is zero.
    error ZeroAmount();

    /// @dev Parameters come from the deploying factory; see IProductBankFactory.
    constructor() EIP712("ProductBank", "1") {
        (bytes32 productId_, address owner, address pushPull_) =
            IProductBankFactory(msg.sender).bankParameters();
        if (owner == address(0) || pushPull_ == address(0)) revert ZeroAddress();
        productId = productId_;
        factory = msg.sender;
        pushPull = IMultiTokenPushPull(pushPull_);
        _grantRole(DEFAULT_ADMIN_ROLE, owner);
    }

    /// @notice Pulls `amount` of `token` from the caller into the bank.
    /// @dev Owner only; the caller must have approved the bank. Emits `FundsDeposited` with the
    /// amount actually received (balance delta).
    /// @param token The ERC-20 to deposit (non-zero).
    /// @param amount The amount to pull (non-zero).
    function deposit(address token, uint256 amount)
        external
        nonReentrant
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        if (token == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        uint256 before = IERC20(token).balanceOf(address(this));
        IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
        emit FundsDeposited(token, msg.sender, IERC20(token).balanceOf(address(this)) - before);
    }

    /// @notice Sends `amount` of `token` from the bank to `recipient`.
    /// @dev Owner only. Emits `FundsWithdrawn`.
    /// @param token The ERC-20 to withdraw (non-zero).
    /// @param recipient The receiver (non-zero).
    /// @param amount The amount (non-zero, at most the bank's balance).
    function withdraw(address token, address recipient, uint256 amount)
        external
        nonReentrant
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        if (token == address(0) || recipient == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        uint256 balance = IERC20(token).balanceOf(address(this));
        if (balance < amount) revert InsufficientBalance(balance, amount);
        IERC20(token).safeTransfer(recipient, amount);
        emit FundsWithdrawn(token, recipient, amount);
    }

    /// @notice Sets the remaining budget of (campaignId, token) and activates the pair.
    /// @dev Owner only. `budget` = `UNCAPPED` means no cap; any other value is a cap that stays a
    /// cap when spent to 0. Reverts `CampaignNotActive` on a deactivated campaign. Emits
    /// `CampaignBudgetAllocated`.
    /// @param campaignId The campaign.
    /// @param token The ERC-20 the budget is in (non-zero).
    /// @param budget The new remaining budget (non-zero).
    function allocateCampaignBudget(bytes32 campaignId, address token, uint256 budget)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        if (token == address(0)) revert ZeroAddress();
        if (budget == 0) revert ZeroAmount();
        if (_deactivated[campaignId]) revert CampaignNotActive(campaignId, token);
        Budget storage b = _budgets[campaignId][token];
        b.remaining = budget;
        b.allocated = true;
        emit CampaignBudgetAllocated(campaignId, token, budget);
    }

    /// @notice Deactivates `campaignId` for every token, for good.
    /// @dev Owner only. Emits `CampaignDeactivated`.
    /// @param campaignId The campaign (not already deactivated).
    function deactivateCampaign(bytes32 campaignId) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (_deactivated[campaignId]) revert CampaignAlreadyDeactivated(campaignId);
        _deactivated[campaignId] = true;
        emit CampaignDeactivated(campaignId);
    }

    /// @notice Pushes a distributor-signed batch of rewards into the MultiTokenPushPull.
    /// @dev Anyone may submit. Checks, in order: deadline (inclusive), unused nonce, batch size
    /// 1..MAX_BATCH_SIZE, campaign active for the token, no zero user or amount, signature,
    /// budget, balance. Marks the nonce and the budget, emits `RewardsPushed`, then approves the
    /// total and calls `pushRewards` (which emits one `RewardAdded` per entry).
    /// @param campaignId The campaign charged.
    /// @param token The ERC-20 pushed.
    /// @param rewards The (user, amount) entries, in the signed order.
    /// @param nonce The batch nonce (any unused bytes32).
    /// @param deadline The last timestamp at which the batch is accepted.
    /// @param signature The 65-byte EIP-712 signature of a DISTRIBUTOR_ROLE holder.
    function pushRewards(
        bytes32 campaignId,
        address token,
        Reward[] calldata rewards,
        bytes32 nonce,
        uint256 deadline,
        bytes calldata signature
    ) external nonReentrant {
        if (block.timestamp > deadline) revert DeadlineExpired(deadline, block.timestamp);
        if (_usedNonces[nonce]) revert NonceAlreadyUsed(nonce);
        uint256 n = rewards.length;
        if (n == 0 || n > MAX_BATCH_SIZE) revert InvalidBatchSize(n, MAX_BATCH_SIZE);
        if (!_isActive(campaignId, token)) revert CampaignNotActive(campaignId, token);
        (bytes32 rewardsHash, uint256 total) = _hashRewards(rewards);
        _checkSigner(_batchDigest(campaignId, token, rewardsHash, nonce, deadline), signature);
        _spend(campaignId, token, total);
        uint256 balance = IERC20(token).balanceOf(address(this));
        if (balance < total) revert InsufficientBalance(balance, total);
        _usedNonces[nonce] = true;
        emit RewardsPushed(campaignId, token, nonce, total, n);
        IERC20(token).forceApprove(address(pushPull), total);
        pushPull.pushRewards(token, rewards);
    }

    /// @notice Whether `nonce` was used by an accepted batch.
    /// @param nonce The batch nonce.
    /// @return True when used.
    function isNonceUsed(bytes32 nonce) external view returns (bool) {
        return _usedNonces[nonce];
    }

    /// @notice The budget state of (campaignId, token).
    /// @param campaignId The campaign.
    /// @param token The ERC-20.
    /// @return active Whether batches for the pair are accepted.
    /// @return capped False when the budget is `UNCAPPED`.
    /// @return remaining What is left (`UNCAPPED` when not capped; 0 when never allocated).
    /// @return spent The sum of all accepted batches for the pair.
    function getCampaignBudget(bytes32 campaignId, address token)
        external
        view
        returns (bool active, bool capped, uint256 remaining, uint256 spent)
    {
        Budget storage b = _budgets[campaignId][token];
        return (_isActive(campaignId, token), b.remaining != UNCAPPED, b.remaining, b.spent);
    }

    /// @notice Whether `campaignId` was deactivated.
    /// @param campaignId The campaign.
    /// @return True when deactivated.
    function isCampaignDeactivated(bytes32 campaignId) external view returns (bool) {
        return _deactivated[campaignId];
    }

    /// @notice The EIP-712 domain separator of this bank on this chain.
    /// @return The domain separator.
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// @notice The EIP-712 digest a distributor signs for this batch (for off-chain checks).
    /// @param campaignId The campaign.
    /// @param token The ERC-20.
    /// @param rewards The entries.
    /// @param nonce The batch nonce.
    /// @param deadline The deadline.
    /// @return The digest.
    function hashRewardBatch(
        bytes32 campaignId,
        address token,
        Reward[] calldata rewards,
        bytes32 nonce,
        uint256 deadline
    ) external view returns (bytes32) {
        (bytes32 rewardsHash,) = _hashRewards(rewards);
        return _batchDigest(campaignId, token, rewardsHash, nonce, deadline);
    }

    function _isActive(bytes32 campaignId, address token) private view returns (bool) {
        return _budgets[campaignId][token].allocated && !_deactivated[campaignId];
    }

    /// @dev Validates the entries and returns the EIP-712 hash of the array and its sum.
    function _hashRewards(Reward[] calldata rewards)
        private
        pure
        returns (bytes32 rewardsHash, uint256 total)
    {
        bytes32[] memory hashes = new bytes32[](rewards.length);
        for (uint256 i; i < rewards.length; ++i) {
            Reward calldata r = rewards[i];
            if (r.user == address(0)) revert ZeroAddress();
            if (r.amount == 0) revert ZeroAmount();
            total += r.amount;
            hashes[i] = keccak256(abi.encode(REWARD_TYPEHASH, r.user, r.amount));
        }
        rewardsHash = keccak256(abi.encodePacked(hashes));
    }

    function _batchDigest(
        bytes32 campaignId,
        address token,
        bytes32 rewardsHash,
        bytes32 nonce,
        uint256 deadline
    ) private view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(REWARD_BATCH_TYPEHASH, campaignId, token, rewardsHash, nonce, deadline)
            )
        );
    }

    function _checkSigner(bytes32 digest, bytes calldata signature) private view {
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, signature);
        if (err != ECDSA.RecoverError.NoError || !hasRole(DISTRIBUTOR_ROLE, signer)) {
            revert InvalidSignature();
        }
    }

    function _spend(bytes32 campaignId, address token, uint256 total) private {
        Budget storage b = _budgets[campaignId][token];
        if (b.remaining != UNCAPPED) {
            if (b.remaining < total) revert InsufficientBudget(b.remaining, total);
            b.remaining -= total;
        }
        b.spent += total;
    }
}

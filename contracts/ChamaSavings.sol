// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @title ChamaSavings
/// @notice Rotating savings groups ("chamas") in one ERC-20. A creator opens a chama with a
/// fixed contribution and a member count; members join until it is full; then, in each cycle,
/// every member contributes once and the whole pot goes to the member whose turn it is (join
/// order, the creator first). After one payout per member the chama is completed.
/// @dev Chama ids start at 1. Cycles are numbered from 1 to the member count. The token must be a
/// plain ERC-20 (no fee on transfer). Payouts are permissionless: anyone may trigger the payout
/// of a cycle once every member contributed.
contract ChamaSavings is ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice The smallest allowed member count.
    uint256 public constant MIN_MEMBERS = 2;
    /// @notice The largest allowed member count.
    uint256 public constant MAX_MEMBERS = 50;

    /// @notice The ERC-20 every chama of this deployment saves in.
    IERC20 public immutable token;

    struct Chama {
        string name;
        address creator;
        uint256 contributionAmount;
        uint256 maxMembers;
        uint256 cycle;
        uint256 contributionsThisCycle;
        bool completed;
        address[] members;
    }

    uint256 private _chamaCount;
    mapping(uint256 chamaId => Chama) private _chamas;
    mapping(uint256 chamaId => mapping(address member => bool)) private _isMember;
    mapping(uint256 chamaId => mapping(uint256 cycle => mapping(address member => bool)))
        private _contributed;
    mapping(uint256 chamaId => mapping(address member => uint256)) private _totalContributed;
    mapping(uint256 chamaId => mapping(address member => uint256)) private _totalReceived;

    /// @notice Emitted when `creator` opened chama `chamaId` (the creator joins it at once).
    /// @param chamaId The new chama's id.
    /// @param name A free-form name.
    /// @param creator The creator, its first member.
    /// @param contributionAmount What each member pays per cycle.
    event ChamaCreated(
        uint256 indexed chamaId, string name, address indexed creator, uint256 contributionAmount
    );

    /// @notice Emitted when `member` joined chama `chamaId` (the creator included).
    /// @param chamaId The chama.
    /// @param member The new member.
    event ChamaJoined(uint256 indexed chamaId, address indexed member);

    /// @notice Emitted when `contributor` paid its contribution for the current cycle.
    /// @param chamaId The chama.
    /// @param contributor The member who paid.
    /// @param amount The amount paid (the chama's contribution amount).
    /// @param timestamp The block timestamp.
    event ContributionMade(
        uint256 indexed chamaId, address indexed contributor, uint256 amount, uint256 timestamp
    );

    /// @notice Emitted when the pot of cycle `cycleNumber` was paid to `recipient`.
    /// @param chamaId The chama.
    /// @param recipient The member whose turn it was.
    /// @param amount The pot (contribution amount times member count).
    /// @param cycleNumber The cycle paid, from 1.
    event PayoutProcessed(
        uint256 indexed chamaId, address indexed recipient, uint256 amount, uint256 cycleNumber
    );

    /// @notice Emitted after the last cycle's payout: every member received one pot.
    /// @param chamaId The chama.
    event ChamaCompleted(uint256 indexed chamaId);

    /// @notice The token address is zero.
    error ZeroAddress();
    /// @notice The contribution amount is zero.
    error ZeroAmount();
    /// @notice The member count is outside MIN_MEMBERS..MAX_MEMBERS.
    error InvalidMaxMembers(uint256 maxMembers);
    /// @notice No chama has this id.
    error ChamaNotFound(uint256 chamaId);
    /// @notice The chama has all its members.
    error ChamaFull(uint256 chamaId);
    /// @notice The account already is a member.
    error AlreadyMember(uint256 chamaId, address account);
    /// @notice The account is not a member.
    error NotMember(uint256 chamaId, address account);
    /// @notice The chama is not full yet, so no cycle runs.
    error ChamaNotStarted(uint256 chamaId);
    /// @notice Every cycle was paid out.
    error ChamaAlreadyCompleted(uint256 chamaId);
    /// @notice The member already contributed in this cycle.
    error AlreadyContributed(uint256 chamaId, address member, uint256 cycle);
    /// @notice Not every member contributed in this cycle yet.
    error ContributionsIncomplete(uint256 chamaId, uint256 received, uint256 required);

    /// @param token_ The ERC-20 of this deployment.
    constructor(IERC20 token_) {
        if (address(token_) == address(0)) revert ZeroAddress();
        token = token_;
    }

    /// @notice Opens a chama; the caller becomes its first member. Emits `ChamaCreated` then
    /// `ChamaJoined`.
    /// @param name A free-form name.
    /// @param contributionAmount What each member pays per cycle (non-zero).
    /// @param maxMembers The member count, MIN_MEMBERS..MAX_MEMBERS.
    /// @return chamaId The new chama's id.
    function createChama(string calldata name, uint256 contributionAmount, uint256 maxMembers)
        external
        returns (uint256 chamaId)
    {
        if (contributionAmount == 0) revert ZeroAmount();
        if (maxMembers < MIN_MEMBERS || maxMembers > MAX_MEMBERS) {
            revert InvalidMaxMembers(maxMembers);
        }
        chamaId = ++_chamaCount;
        Chama storage c = _chamas[chamaId];
        c.name = name;
        c.creator = msg.sender;
        c.contributionAmount = contributionAmount;
        c.maxMembers = maxMembers;
        c.cycle = 1;
        emit ChamaCreated(chamaId, name, msg.sender, contributionAmount);
        _join(chamaId, c);
    }

    /// @notice Joins chama `chamaId` as its next member. Emits `ChamaJoined`.
    /// @param chamaId An existing chama that is not full.
    function joinChama(uint256 chamaId) external {
        Chama storage c = _get(chamaId);
        if (c.members.length >= c.maxMembers) revert ChamaFull(chamaId);
        if (_isMember[chamaId][msg.sender]) revert AlreadyMember(chamaId, msg.sender);
        _join(chamaId, c);
    }

    /// @notice Pays the caller's contribution for the current cycle (pulls it via transferFrom).
    /// @dev The chama must be full and not completed; once per member per cycle. Emits
    /// `ContributionMade`.
    /// @param chamaId The chama.
    function contribute(uint256 chamaId) external nonReentrant {
        Chama storage c = _running(chamaId);
        if (!_isMember[chamaId][msg.sender]) revert NotMember(chamaId, msg.sender);
        if (_contributed[chamaId][c.cycle][msg.sender]) {
            revert AlreadyContributed(chamaId, msg.sender, c.cycle);
        }
        _contributed[chamaId][c.cycle][msg.sender] = true;
        c.contributionsThisCycle += 1;
        _totalContributed[chamaId][msg.sender] += c.contributionAmount;
        emit ContributionMade(chamaId, msg.sender, c.contributionAmount, block.timestamp);
        token.safeTransferFrom(msg.sender, address(this), c.contributionAmount);
    }

    /// @notice Pays the current cycle's pot to the member whose turn it is; anyone may call.
    /// @dev Requires every member's contribution for the cycle. Emits `PayoutProcessed`, and
    /// `ChamaCompleted` after the last cycle.
    /// @param chamaId The chama.
    function processPayout(uint256 chamaId) external nonReentrant {
        Chama storage c = _running(chamaId);
        uint256 n = c.members.length;
        if (c.contributionsThisCycle < n) {
            revert ContributionsIncomplete(chamaId, c.contributionsThisCycle, n);
        }
        uint256 cycle = c.cycle;
        address recipient = c.members[cycle - 1];
        uint256 pot = c.contributionAmount * n;
        _totalReceived[chamaId][recipient] += pot;
        c.contributionsThisCycle = 0;
        c.cycle = cycle + 1;
        emit PayoutProcessed(chamaId, recipient, pot, cycle);
        if (cycle == n) {
            c.completed = true;
            emit ChamaCompleted(chamaId);
        }
        token.safeTransfer(recipient, pot);
    }

    /// @notice The state of chama `chamaId`.
    /// @param chamaId An existing chama.
    /// @return name The name.
    /// @return creator The creator.
    /// @return contributionAmount The contribution per member per cycle.
    /// @return maxMembers The member count when full.
    /// @return memberCount The current member count.
    /// @return cycle The current cycle, from 1 (memberCount + 1 once completed).
    /// @return contributionsThisCycle The contributions received in the current cycle.
    /// @return completed Whether every cycle was paid out.
    function getChama(uint256 chamaId)
        external
        view
        returns (
            string memory name,
            address creator,
            uint256 contributionAmount,
            uint256 maxMembers,
            uint256 memberCount,
            uint256 cycle,
            uint256 contributionsThisCycle,
            bool completed
        )
    {
        Chama storage c = _get(chamaId);
        return (
            c.name,
            c.creator,
            c.contributionAmount,
            c.maxMembers,
            c.members.length,
            c.cycle,
            c.contributionsThisCycle,
            c.completed
        );
    }

    /// @notice The members of chama `chamaId`, in join (= payout) order.
    /// @param chamaId An existing chama.
    /// @return The members.
    function getMembers(uint256 chamaId) external view returns (address[] memory) {
        return _get(chamaId).members;
    }

    /// @notice The number of chamas created (ids run from 1 to this).
    /// @return The count.
    function chamaCount() external view returns (uint256) {
        return _chamaCount;
    }

    /// @notice Whether `account` is a member of chama `chamaId`.
    /// @param chamaId The chama.
    /// @param account The account.
    /// @return True when a member.
    function isMember(uint256 chamaId, address account) external view returns (bool) {
        return _isMember[chamaId][account];
    }

    /// @notice Whether `member` contributed in cycle `cycle` of chama `chamaId`.
    /// @param chamaId The chama.
    /// @param cycle The cycle, from 1.
    /// @param member The member.
    /// @return True when contributed.
    function hasContributed(uint256 chamaId, uint256 cycle, address member)
        external
        view
        returns (bool)
    {
        return _contributed[chamaId][cycle][member];
    }

    /// @notice Everything `member` ever contributed to chama `chamaId`.
    /// @param chamaId The chama.
    /// @param member The member.
    /// @return The sum of the member's `ContributionMade` amounts.
    function getTotalContributed(uint256 chamaId, address member) external view returns (uint256) {
        return _totalContributed[chamaId][member];
    }

    /// @notice Everything `member` ever received from chama `chamaId`.
    /// @param chamaId The chama.
    /// @param member The member.
    /// @return The sum of the member's `PayoutProcessed` amounts.
    function getTotalReceived(uint256 chamaId, address member) external view returns (uint256) {
        return _totalReceived[chamaId][member];
    }

    function _get(uint256 chamaId) private view returns (Chama storage c) {
        c = _chamas[chamaId];
        if (c.creator == address(0)) revert ChamaNotFound(chamaId);
    }

    /// @dev The chama, checked to be full and not completed.
    function _running(uint256 chamaId) private view returns (Chama storage c) {
        c = _get(chamaId);
        if (c.completed) revert ChamaAlreadyCompleted(chamaId);
        if (c.members.length < c.maxMembers) revert ChamaNotStarted(chamaId);
    }

    function _join(uint256 chamaId, Chama storage c) private {
        c.members.push(msg.sender);
        _isMember[chamaId][msg.sender] = true;
        emit ChamaJoined(chamaId, msg.sender);
    }
}

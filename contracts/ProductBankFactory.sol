// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {Create2} from "@openzeppelin/contracts/utils/Create2.sol";

import {IMultiTokenPushPull} from "./interfaces/IMultiTokenPushPull.sol";
import {IProductBankFactory} from "./interfaces/IProductBankFactory.sol";
import {ProductBank} from "./ProductBank.sol";

/// @title ProductBankFactory
/// @notice Deploys one ProductBank per product with CREATE2 (salt = productId) and authorises
/// each new bank as a pusher on the MultiTokenPushPull.
/// @dev Needs PUSHER_MANAGER_ROLE on the MultiTokenPushPull. A bank's address depends only on
/// this factory's address and the product id (see `predictBankAddress`).
contract ProductBankFactory is IProductBankFactory, AccessControl {
    /// @notice May create banks.
    bytes32 public constant BANK_CREATOR_ROLE = keccak256("BANK_CREATOR_ROLE");

    /// @notice The MultiTokenPushPull every bank pushes into.
    address public immutable pushPull;

    struct BankParameters {
        bytes32 productId;
        address owner;
    }

    BankParameters private _params;
    mapping(bytes32 productId => address) private _banks;

    /// @notice Emitted when the bank of `productId` was deployed at `bank`, owned by `owner`.
    /// @param productId The product (the CREATE2 salt).
    /// @param bank The new bank.
    /// @param owner The bank's DEFAULT_ADMIN_ROLE holder.
    event ProductBankCreated(bytes32 indexed productId, address indexed bank, address indexed owner);

    /// @notice The owner or the MultiTokenPushPull address is zero.
    error ZeroAddress();
    /// @notice The product already has a bank.
    error BankAlreadyExists(bytes32 productId, address bank);

    /// @param admin Receives DEFAULT_ADMIN_ROLE and BANK_CREATOR_ROLE.
    /// @param pushPull_ The MultiTokenPushPull.
    constructor(address admin, address pushPull_) {
        if (admin == address(0) || pushPull_ == address(0)) revert ZeroAddress();
        pushPull = pushPull_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(BANK_CREATOR_ROLE, admin);
    }

    /// @notice Deploys the bank of `productId`, owned by `owner`, and authorises it as a pusher.
    /// @dev BANK_CREATOR_ROLE only. Emits `ProductBankCreated` (after MultiTokenPushPull's
    /// `PusherAuthorized`).
    /// @param productId The product (one bank per product).
    /// @param owner The bank's admin (non-zero).
    /// @return bank The new bank's address, equal to `predictBankAddress(productId)`.
    function createBank(bytes32 productId, address owner)
        external
        onlyRole(BANK_CREATOR_ROLE)
        returns (address bank)
    {
        if (owner == address(0)) revert ZeroAddress();
        address existing = _banks[productId];
        if (existing != address(0)) revert BankAlreadyExists(productId, existing);
        _params = BankParameters(productId, owner);
        bank = address(new ProductBank{salt: productId}());
        delete _params;
        _banks[productId] = bank;
        IMultiTokenPushPull(pushPull).authorizePusher(bank);
        emit ProductBankCreated(productId, bank, owner);
    }

    /// @inheritdoc IProductBankFactory
    function bankParameters()
        external
        view
        override
        returns (bytes32 productId, address owner, address pushPull_)
    {
        return (_params.productId, _params.owner, pushPull);
    }

    /// @notice The address the bank of `productId` has (or will have once created).
    /// @param productId The product.
    /// @return The CREATE2 address.
    function predictBankAddress(bytes32 productId) external view returns (address) {
        return Create2.computeAddress(productId, keccak256(type(ProductBank).creationCode));
    }

    /// @notice The bank of `productId`, or zero when none was created.
    /// @param productId The product.
    /// @return The bank's address.
    function getBank(bytes32 productId) external view returns (address) {
        return _banks[productId];
    }
}

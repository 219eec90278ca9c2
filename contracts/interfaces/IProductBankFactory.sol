// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title What a ProductBank reads from the factory deploying it.
/// @dev The bank takes its parameters from its deployer instead of constructor arguments, so
/// that its CREATE2 address depends on the product id alone (the Uniswap V3 pool pattern).
interface IProductBankFactory {
    /// @notice The parameters of the bank being deployed right now (zero outside `createBank`).
    /// @return productId The product the bank serves (also the CREATE2 salt).
    /// @return owner Receives the bank's DEFAULT_ADMIN_ROLE.
    /// @return pushPull The MultiTokenPushPull the bank pushes into.
    function bankParameters()
        external
        view
        returns (bytes32 productId, address owner, address pushPull);
}

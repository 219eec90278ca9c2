// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title HostileToken
/// @notice A mintable ERC-20 that misbehaves on demand, to prove that the contracts' defences
/// (SafeERC20, balance-delta checks, reentrancy guards) fire. Tests only.
contract HostileToken is ERC20 {
    /// @notice How transfers behave.
    enum Mode {
        Normal,
        ReturnFalse,
        FeeOnTransfer,
        Reenter
    }

    /// @notice The current behaviour.
    Mode public mode;
    /// @notice The contract called back in `Reenter` mode.
    address public hookTarget;
    /// @notice The calldata of that call.
    bytes public hookData;

    constructor() ERC20("Hostile", "HOST") {}

    /// @notice Mints `amount` to `to`; anyone may call.
    /// @param to The receiver.
    /// @param amount The amount.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Sets how transfers behave from now on.
    /// @param mode_ The behaviour.
    function setMode(Mode mode_) external {
        mode = mode_;
    }

    /// @notice Sets the call made (and whose revert is bubbled) on each transfer in `Reenter`.
    /// @param target The contract to call.
    /// @param data The calldata.
    function setHook(address target, bytes calldata data) external {
        hookTarget = target;
        hookData = data;
    }

    /// @inheritdoc ERC20
    function transfer(address to, uint256 value) public override returns (bool) {
        if (mode == Mode.ReturnFalse) return false;
        _hook();
        _transfer(msg.sender, to, _net(msg.sender, value));
        return true;
    }

    /// @inheritdoc ERC20
    function transferFrom(address from, address to, uint256 value)
        public
        override
        returns (bool)
    {
        if (mode == Mode.ReturnFalse) return false;
        _hook();
        _spendAllowance(from, msg.sender, value);
        _transfer(from, to, _net(from, value));
        return true;
    }

    /// @dev In `FeeOnTransfer` mode burns 1 wei of every non-zero transfer.
    function _net(address from, uint256 value) private returns (uint256) {
        if (mode != Mode.FeeOnTransfer || value == 0) return value;
        _burn(from, 1);
        return value - 1;
    }

    function _hook() private {
        if (mode != Mode.Reenter) return;
        (bool ok, bytes memory ret) = hookTarget.call(hookData);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 32), mload(ret))
            }
        }
    }
}

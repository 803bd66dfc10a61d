package schedule

import (
	"errors"
	"fmt"
)

// ErrInvalidExpr is wrapped by every error ParseExpr returns.
var ErrInvalidExpr = errors.New("invalid schedule expression")

// ErrNoFargateSize is wrapped by FargateSize and ValidFargate errors.
var ErrNoFargateSize = errors.New("no valid Fargate task size")

// exprError carries a user-facing message that names the field and token at
// fault; it matches ErrInvalidExpr with errors.Is.
type exprError struct{ msg string }

func (e *exprError) Error() string { return e.msg }
func (e *exprError) Unwrap() error { return ErrInvalidExpr }

func exprErrorf(format string, args ...any) error {
	return &exprError{msg: fmt.Sprintf(format, args...)}
}

package agent

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Long polls (WaitProcess, WriteStdin, WaitOOM, WaitConsole)
// answer shortly before the caller's deadline if nothing happened, with
// "nothing yet" (DeadlineExceeded, or an empty or partial answer): a poll
// that the host sees time out instead means the agent is not answering,
// and the host then checks whether the guest is alive at all.

// answerMargin is how long before the caller's deadline a poll answers.
const answerMargin = 2 * time.Second

// answerBy is when a poll under ctx must answer; zero if ctx has no
// deadline.
func answerBy(ctx context.Context) time.Time {
	d, ok := ctx.Deadline()
	if !ok {
		return time.Time{}
	}
	margin := min(answerMargin, time.Until(d)/4)
	return d.Add(-margin)
}

// pollContext ends at answerBy(ctx).
func pollContext(ctx context.Context) (context.Context, context.CancelFunc) {
	by := answerBy(ctx)
	if by.IsZero() {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, by)
}

// notYet is a poll's answer when nothing happened in time.
func notYet(ctx context.Context) error {
	if ctx.Err() == context.Canceled {
		return status.FromContextError(ctx.Err()).Err()
	}
	return status.Error(codes.DeadlineExceeded, "nothing yet")
}

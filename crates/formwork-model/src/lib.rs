//! Model backends on candle.

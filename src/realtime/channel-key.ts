/**
 * The partition key of a channel's ephemeral state (presence, client broadcasts).
 *
 * As in Supabase Realtime, a private channel and a public channel with the same topic name are
 * two different rooms: `realtime:canvas:{id}` joined with `config.private: true` (authorized by
 * RLS) shares nothing with the same topic joined publicly. Every piece of per-channel state is
 * keyed by this one value, so a public join can neither see nor reach the private room.
 */
export type ChannelKey = `private:${string}` | `public:${string}`;

/** The key of sub-topic `subTopic` (`canvas:<id>`, without `realtime:`) joined privately or not. */
export function channelKey(subTopic: string, isPrivate: boolean): ChannelKey {
  return isPrivate ? `private:${subTopic}` : `public:${subTopic}`;
}

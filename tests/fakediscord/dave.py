"""The voice server's side of DAVE for one call: MLS external sender, proposals, commits, welcomes.

The fake users are real ``davey`` sessions living here; the bot is remote (voice websocket).
What the server does, per the DAVE protocol:

- a bot joins (op 26 key package): if the users already hold a group, the server proposes adding
  the bot (and removing its previous leaf, after an op 31 or a reconnect); a user commits; the
  other users process the commit; the bot gets the welcome (op 30) with a transition id;
- nobody holds a group yet (a lone user): everyone pending gets the proposals (op 27) and
  commits; the server picks the winning commit ("user" or "bot" by configuration) and announces
  it (op 29) to its author, the welcome (op 30) to the others;
- the bot's op 23 (transition ready) is answered with op 22 (execute transition).

Leaf indexes are tracked the way MLS assigns them (an Add takes the leftmost blank leaf).
"""

from __future__ import annotations

import davey

from tests.server.dave_helpers import PROTOCOL_VERSION, ExternalSender

APPEND = davey.ProposalsOperationType.append


def unvec(data: bytes) -> bytes:
    """The body of an MLS variable-length vector (RFC 9420 §2.1.2)."""
    kind = data[0] >> 6
    size = 1 << kind
    length = int.from_bytes(data[:size], "big") & ((1 << (8 * size - 2)) - 1)
    body = data[size:size + length]
    if len(body) != length or size + length != len(data):
        raise ValueError("bad MLS vector")
    return body


def _read_vec(data: bytes, at: int) -> int | None:
    """Offset after the vector starting at ``at``, or None if it does not fit."""
    if at >= len(data):
        return None
    kind = data[at] >> 6
    if kind == 3:
        return None
    size = 1 << kind
    if at + size > len(data):
        return None
    length = int.from_bytes(data[at:at + size], "big") & ((1 << (8 * size - 2)) - 1)
    end = at + size + length
    return end if end <= len(data) else None


def split_commit_welcome(data: bytes) -> tuple[bytes, bytes]:
    """Op 28's payload: an MLSMessage commit immediately followed by a bare Welcome (no length between)."""
    for k in range(16, len(data) - 4):
        if data[k:k + 2] != b"\x00\x02":  # Welcome.cipher_suite: MLS_128_DHKEMP256_AES128GCM_SHA256_P256
            continue
        end = _read_vec(data, k + 2)  # secrets
        if end is None:
            continue
        if _read_vec(data, end) == len(data):  # encrypted_group_info ends the payload
            return data[:k], data[k:]
    raise ValueError("op 28 payload has no welcome")


def corrupt(blob: bytes) -> bytes:
    """Flip a bit inside the last bytes (the encrypted group info's AEAD tag)."""
    return blob[:-3] + bytes([blob[-3] ^ 0x01]) + blob[-2:]


class DaveCall:
    def __init__(self, channel_id: int, user_ids: list[int], *, commit_winner: str = "user"):
        self.channel_id = channel_id
        self.sender = ExternalSender()
        self.commit_winner = commit_winner
        self.users: dict[int, davey.DaveSession] = {}
        self.key_packages: dict[int, bytes] = {}
        self.leaves: list[int | None] = []  # user id per MLS leaf, None for a blank
        self.epoch = 0
        self.transition = 0
        self.bot_id: int | None = None
        self.events: list[str] = []
        self.last_proposals = b""
        for uid in user_ids:
            session = davey.DaveSession(PROTOCOL_VERSION, uid, channel_id)
            self.key_packages[uid] = session.get_serialized_key_package()
            session.set_external_sender(self.sender.package())
            self.users[uid] = session
        if len(user_ids) >= 2:  # the users were talking before the bot came: they already hold a group
            first, *others = user_ids
            self._commit(first, [], [self.key_packages[u] for u in others], others, with_welcome_for_users=True)

    @property
    def established(self) -> bool:
        return bool(self.leaves)

    def next_transition(self) -> int:
        self.transition = self.transition % 0xFFFF + 1
        return self.transition

    def _leaf_add(self, uid: int) -> None:
        if None in self.leaves:
            self.leaves[self.leaves.index(None)] = uid
        else:
            self.leaves.append(uid)

    def _commit(self, committer: int, remove_leaves: list[int], key_packages: list[bytes], added: list[int],
                with_welcome_for_users: bool = False) -> davey.CommitWelcome:
        """Proposals to every user in the group, ``committer`` commits, every user processes the commit."""
        messages = b""
        if remove_leaves:
            messages += unvec(self.sender.remove_proposals(self.channel_id, self.epoch, remove_leaves))
        if key_packages:
            messages += unvec(self.sender.add_proposals(self.channel_id, self.epoch, key_packages))
        from tests.server.dave_helpers import vec

        proposals = self.last_proposals = vec(messages)
        members = [u for u in self.users if u in self.leaves] or [committer]
        result = None
        for uid in members:
            out = self.users[uid].process_proposals(APPEND, proposals)
            if uid == committer:
                result = out
        if result is None:
            raise RuntimeError("no commit from the committer")
        for uid in members:
            self.users[uid].process_commit(result.commit)
        if not self.leaves:
            self.leaves = [committer]
        for leaf in remove_leaves:
            self.leaves[leaf] = None
        for uid in added:
            self._leaf_add(uid)
        if with_welcome_for_users:
            for uid in added:
                self.users[uid].process_welcome(result.welcome)
        self.epoch += 1
        return result

    # ------------------------------------------------------------------ the bot

    def bot_key_package(self, bot_id: int, key_package: bytes) -> list[tuple]:
        """What to send the bot for its new key package: [("proposals", bytes) | ("welcome"|"commit", tid, bytes) | ("await_commit",)]."""
        self.bot_id = bot_id
        if self.established:
            remove = [i for i, uid in enumerate(self.leaves) if uid == bot_id]
            committer = next(uid for uid in self.leaves if uid is not None and uid in self.users)
            result = self._commit(committer, remove, [key_package], [bot_id])
            self.events.append(f"user {committer} committed adding the bot" + (" (rebuild)" if remove else ""))
            return [("welcome", self.next_transition(), result.welcome)]
        # A lone, pending user: both sides get the proposals and both commit; the server picks one.
        (uid, session), = self.users.items()
        to_bot = self.sender.add_proposals(self.channel_id, 0, [self.key_packages[uid]])
        user_commit = session.process_proposals(APPEND, self.sender.add_proposals(self.channel_id, 0, [key_package]))
        if self.commit_winner == "bot":
            self._pending_user = uid
            self.events.append("waiting for the bot's commit")
            return [("proposals", to_bot), ("await_commit",)]
        session.process_commit(user_commit.commit)
        self.leaves = [uid, bot_id]
        self.epoch = 1
        self.events.append(f"user {uid} won the commit race")
        return [("proposals", to_bot), ("welcome", self.next_transition(), user_commit.welcome)]

    def bot_commit(self, payload: bytes) -> list[tuple]:
        """The bot's op 28 while we wait for it (commit_winner="bot"): announce it back, welcome the user."""
        commit, welcome = split_commit_welcome(payload)
        uid = self._pending_user
        self.users[uid].process_welcome(welcome)
        self.leaves = [self.bot_id, uid]
        self.epoch = 1
        self.events.append("the bot won the commit race")
        return [("commit", self.next_transition(), commit)]

    def bot_left(self) -> None:
        """The bot left the call: remove its leaf (a new epoch for the users)."""
        if self.bot_id is None or self.bot_id not in self.leaves:
            return
        remaining = [u for u in self.leaves if u is not None and u != self.bot_id]
        if not remaining:
            self.leaves = []
            return
        leaf = self.leaves.index(self.bot_id)
        self._commit(remaining[0], [leaf], [], [])
        self.events.append("removed the bot's leaf")

    def add_guest(self, guest_id: int) -> bytes:
        """Someone silent joins the call: the users' group moves to a new epoch (new keys). Returns the commit."""
        guest = davey.DaveSession(PROTOCOL_VERSION, guest_id, self.channel_id)
        key_package = guest.get_serialized_key_package()
        guest.set_external_sender(self.sender.package())
        committer = next(uid for uid in self.leaves if uid is not None and uid in self.users)
        result = self._commit(committer, [], [key_package], [guest_id])
        guest.process_welcome(result.welcome)
        self.users[guest_id] = guest
        self.events.append(f"guest {guest_id} joined the group (epoch {self.epoch})")
        return result.commit

    def encrypt(self, uid: int, frame: bytes) -> bytes:
        return self.users[uid].encrypt_opus(frame)

# frozen_string_literal: true

require "kgio"

module Nightmare
  # Stands in a worker's list of listeners, as Unicorn::Worker does for its
  # signal pipe: IO.select watches #to_io, and #kgio_tryaccept yields the
  # next request the front buffered, as a Kgio::Socket whose kgio_addr (and
  # so REMOTE_ADDR) is the real client's address.
  class HandoffAcceptor
    def initialize(channel)
      @channel = channel
    end

    def to_io
      @channel
    end

    # nil when another worker took the request first.
    def kgio_tryaccept
      fd, client_addr, = Nightmare::Native.receive_handoff(@channel.fileno)
      fd or return
      client = Kgio::Socket.for_fd(fd)
      client.kgio_addr = client_addr
      client
    end

    def close
      @channel.close unless @channel.closed?
    end
  end
end

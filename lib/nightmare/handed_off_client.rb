# frozen_string_literal: true

require "kgio"

module Nightmare
  # A connection from the front as a worker accepts it. The acceptor reads
  # the preamble and, in the same read, the start of the request (the front
  # sends both at once); the first read Unicorn makes is answered from those
  # bytes instead of asking the kernel again.
  class HandedOffClient < Kgio::Socket
    # The request bytes read along with the preamble, or nil.
    attr_writer :request_start

    def kgio_read!(length, buffer = nil)
      @request_start ? take_request_start(length, buffer) : super
    end

    def kgio_read(length, buffer = nil)
      @request_start ? take_request_start(length, buffer) : super
    end

    def kgio_tryread(length, buffer = nil)
      @request_start ? take_request_start(length, buffer) : super
    end

    private

    def take_request_start(length, buffer)
      taken = @request_start
      if taken.bytesize > length
        @request_start = taken.byteslice(length..)
        taken = taken.byteslice(0, length)
      else
        @request_start = nil
      end
      buffer ? buffer.replace(taken) : taken
    end
  end
end
